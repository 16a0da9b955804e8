"""The template registry: which template computes which op kind, and the base of its parameters.

One module per op family, `codegen/ops/<family>.py` (the family names of `ir/semantics`;
`core` holds the ops of `ir/ops/core.py` that have no semantics module), defines one
`Params` subclass per template and registers it with `@template(kind)`; the template file
is `templates/<kind>.py.j2` unless the class names another (`TEMPLATE`).
`from_launch(attrs, ops)` takes the op's attributes and its operands by role name (the op's
`operand_roles()`), each an `Operand(shape, dtype, format)`, and returns the constants the template
is rendered with. Runtime sizes (rows, tokens) are not parameters: one kernel serves every
batch and step length.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, ClassVar, Literal, NamedTuple

from pydantic import Field

from v4c.codegen.render import Params
from v4c.envs import triton_interpret
from v4c.ir.types import ir_dtype
from v4c.ir.weights import WeightFormat

# (shape, dtype) of each operand, in order, with a weight's format third where it has one
Shapes = list[tuple]


class Operand(NamedTuple):
    shape: tuple[int, ...]  # a quantised weight: its logical shape
    dtype: str  # a torch dtype's name or the IR's name
    format: WeightFormat | None = None  # a weight: how the program holds it


Operands = dict[str, Operand]  # role name -> operand


class Template(Params):
    """Base of every template's parameters; `TEMPLATE` is the file it renders (set by
    `@template` to the op kind unless a subclass names a shared one)."""

    TEMPLATE: ClassVar[str] = ""

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> Template:
        raise NotImplementedError


class Dots(Template):
    """Base of the parameters of a template whose kernels call `tl.dot`. `upcast` (see
    kernels/dots.py) is decided here, once, as the parameters are made: on under Triton's
    interpreter, so its render differs from the GPU's by source (and so by cache key)."""

    upcast: bool = Field(default_factory=triton_interpret)


Precision = Literal["tf32", "ieee"]


def dot_precision(dtypes: list[str]) -> Precision:
    """`tl.dot` input precision for fp32-cast operands of these types ('bf16' as the IR
    writes them or 'torch.bfloat16'): TF32 holds bf16 values exactly, not fp32 ones."""
    return "tf32" if {ir_dtype(d) for d in dtypes} == {"bf16"} else "ieee"


TEMPLATES: dict[str, type[Template]] = {}
FAMILIES = ("attention", "compressor", "core", "gemm", "hc", "indexer", "moe", "norm", "rope")


def template(kind: str) -> Callable[[type[Template]], type[Template]]:
    def deco(cls: type[Template]) -> type[Template]:
        TEMPLATES[kind] = cls
        if not cls.TEMPLATE:
            cls.TEMPLATE = kind
        return cls

    return deco


def load_templates() -> dict[str, type[Template]]:
    for family in FAMILIES:
        importlib.import_module(f"v4c.codegen.ops.{family}")
    return TEMPLATES


def pow2(x: int) -> int:
    """The smallest power of two >= x (Triton block shapes)."""
    return 1 << (x - 1).bit_length()


def tile(n: int, lo: int = 16, hi: int = 1 << 30) -> int:
    """A power-of-two tile covering n, clamped to [lo, hi] (`tl.dot` needs 16 on every side,
    so small dims are padded up and masked)."""
    return max(lo, min(hi, pow2(n)))


def describe(value: Any) -> tuple:
    """(shape, dtype) of one operand as `from_launch` reads it (a tensor's torch dtype); a
    weight kept quantised (`QuantWeight`): its logical shape, bf16 and its format."""
    from v4c.ir.semantics.quant import QuantWeight

    if isinstance(value, QuantWeight):
        return tuple(value.shape), "bf16", value.format
    return tuple(value.shape), str(value.dtype)


def weight_format(op: Operand) -> WeightFormat:
    """The format a weight operand is held in: its plan format if quantised, else dense in
    the dtype it is held in (a bf16 weight of an fp32 run is fp32)."""
    if op.format is not None and op.format.quantised:
        return op.format
    return WeightFormat.dense(ir_dtype(op.dtype) or op.dtype)
