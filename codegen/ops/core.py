"""Parameters of the templates of the ops in `ir/ops/core.py` that have no semantics module
of their own: add, embed and the FP8 activation rounding (quant_sim)."""

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


@template("quant_sim")
class QuantSim(Template):
    dim: int  # channels of a row
    dims: int  # the first `dims` are rounded (to FP8, in blocks), the rest copied
    block: int
    blocks: int  # blocks of a row's rounded channels, padded to a power of two

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> QuantSim:
        dim, block = ops["x"].shape[-1], attrs["block"]
        dims = attrs["dims"] or dim
        if block & (block - 1) or dims > dim:
            raise ValueError(f"quant_sim: blocks of {block} over {dims} of {dim} channels")
        return cls(dim=dim, dims=dims, block=block, blocks=pow2(-(-dims // block)))
