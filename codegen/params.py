"""The template registry: which template computes which op kind, and the base of its parameters.

One module per op family, `codegen/ops/<family>.py` (the family names of `ir/semantics`;
`core` holds the ops of `ir/ops/core.py` that have no semantics module), defines one
`Params` subclass per template and registers it with `@template(kind)`; the template file
is `templates/<kind>.py.j2` unless the class names another (`TEMPLATE`).
`from_launch(attrs, ops)` takes the op's attributes and its operands by role name (the op's
`operand_roles()`), each an `Operand(shape, dtype)`, and returns the constants the template
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

Shapes = list[tuple[tuple[int, ...], str]]  # (shape, dtype) of each operand, in order


class Operand(NamedTuple):
    shape: tuple[int, ...]
    dtype: str  # a torch dtype's name, the IR's name, or a stored format (see `describe`)


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
FAMILIES = ("attention", "compressor", "core", "hc", "indexer", "moe", "norm", "rope")


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


def describe(value: Any) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) of one operand as `from_launch` reads it: a tensor's torch dtype, or
    for a weight kept quantised (`QuantWeight`) its logical shape and `fp8:<bo>x<bi>` (the
    scale block) or `fp4:<block>`."""
    from v4c.ir.semantics.quant import QuantWeight

    if isinstance(value, QuantWeight):
        if value.fmt == "fp8":
            return tuple(value.shape), f"fp8:{value.block[0]}x{value.block[1]}"
        return tuple(value.shape), f"fp4:{value.shape[-1] // value.scale.shape[-1]}"
    return tuple(value.shape), str(value.dtype)
