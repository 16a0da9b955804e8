"""Parameters of the templates of the ops in `ir/ops/core.py` that have no semantics module
of their own: add and embed."""

from __future__ import annotations

from typing import Any

from v4c.codegen.params import Operands, Template, pow2, template

MAX_BLOCK = 1024  # columns per program of the copy kernels


@template("add")
class Add(Template):
    block: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> Add:
        return cls(block=MAX_BLOCK)


@template("embed")
class Embed(Template):
    dim: int
    block_d: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> Embed:
        dim = ops["weight"].shape[1]
        return cls(dim=dim, block_d=min(MAX_BLOCK, pow2(dim)))
