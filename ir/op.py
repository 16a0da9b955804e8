"""The op registry: one frozen dataclass per op kind, the single source of truth for an op.

An op class declares its operand and result roles, its typed attributes (the dataclass
fields), `infer` (result types from operand types) and `run`, its reference semantics in
torch (most delegate to `v4c.ir.semantics`). Fused ops are ops too: their `run` is the
composition of the ops they replace, so a fusion is correct when the graph computes the
same before and after it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

from v4c.errors import IRError
from v4c.ir.types import TensorType

OPS: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    if cls.kind in OPS:
        raise IRError(f"op {cls.kind!r} registered twice")
    OPS[cls.kind] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class Op:
    kind: ClassVar[str]
    operands: ClassVar[tuple[str, ...]] = ()
    results: ClassVar[tuple[str, ...]] = ("out",)
    side_effects: ClassVar[bool] = False  # never dead (outputs)
    source: ClassVar[str | None] = None  # "input" | "param" | "state": value comes from outside
    aliases: ClassVar[dict[int, int]] = {}  # result index -> operand index it is a view of
    # its result depends on other ranks' operands or this rank's place in the grid: an
    # executor runs it through a communicator (`communicate`), not `run`
    collective: ClassVar[bool] = False
    # operand roles whose weights the op's kernel reads as stored (FP8/FP4, dequantised on
    # the fly); a weight read by any other op is widened at load
    quantised_operands: ClassVar[frozenset[str]] = frozenset()
    # attributes that switch on an official rounding (numerics: official, V4_REFERENCE §12);
    # the pass manager checks that no pass drops one (`v4c.passes.roundings`)
    rounding_attrs: ClassVar[tuple[str, ...]] = ()

    def operand_roles(self) -> tuple[str, ...]:
        """Roles of this instance's operands (ops whose arity depends on attrs override)."""
        return self.operands

    def result_roles(self) -> tuple[str, ...]:
        return self.results

    def infer(self, ins: Sequence[TensorType]) -> tuple[TensorType, ...]:
        raise IRError(f"{self.kind}: no type rule")

    def run(self, ins: Sequence[Any]) -> tuple[Any, ...]:
        raise IRError(f"{self.kind}: not executable (a {self.source} is supplied by the executor)")

    def roundings(self) -> frozenset[tuple[str, Any]]:
        """The official roundings this op applies: (attribute, value) of each one switched on."""
        on = ((a, getattr(self, a)) for a in self.rounding_attrs)
        return frozenset((a, v) for a, v in on if v not in (False, "none"))

    def attrs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def fail(self, message: str) -> IRError:
        return IRError(f"{self.kind}: {message}")

    def expect(self, ok: bool, message: str) -> None:
        if not ok:
            raise self.fail(message)


def make_op(name: str, attrs: dict[str, Any]) -> Op:
    """The op `name` with `attrs`; the registry is complete whatever was imported before (a
    plan loaded in a fresh process names ops no module has registered yet)."""
    import v4c.ir.ops  # noqa: F401  (registers every op)

    if name not in OPS:
        raise IRError(f"unknown op {name!r}")
    try:
        return OPS[name](**attrs)
    except TypeError as err:
        raise IRError(f"{name}: bad attributes {sorted(attrs)}: {err}") from None
