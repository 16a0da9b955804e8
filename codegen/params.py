"""The template registry: which template computes which op kind, and its parameters.

Each family module (`params_<family>.py`) defines one `Params` subclass per template and
registers it with `@template(kind)`; the template file is `templates/<kind>.py.j2`.
`from_launch(attrs, inputs)` takes the op's attributes and the (shape, dtype) of each
operand of one launch and returns the constants the template is rendered with. Runtime
sizes (rows, tokens) are not parameters: one kernel serves every batch and step length.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from pydantic import Field

from v4c.codegen.render import Params
from v4c.envs import triton_interpret

Shapes = list[tuple[tuple[int, ...], str]]  # (shape, dtype) of each operand


class Dots(Params):
    """Base of the parameters of a template whose kernels call `tl.dot`. `upcast` (see
    kernels/dots.py) is decided here, once, as the parameters are made: on under Triton's
    interpreter, so its render differs from the GPU's by source (and so by cache key)."""

    upcast: bool = Field(default_factory=triton_interpret)


TEMPLATES: dict[str, type[Params]] = {}
FAMILIES = (
    "v4c.codegen.params_norm",
    "v4c.codegen.params_hc",
    "v4c.codegen.params_elementwise",
    "v4c.codegen.params_attention",
    "v4c.codegen.params_moe",
    "v4c.codegen.params_compressor",
    "v4c.codegen.params_indexer",
)


def template(kind: str) -> Callable[[type[Params]], type[Params]]:
    def deco(cls: type[Params]) -> type[Params]:
        TEMPLATES[kind] = cls
        return cls

    return deco


def load_templates() -> dict[str, type[Params]]:
    for module in FAMILIES:
        importlib.import_module(module)
    return TEMPLATES


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
