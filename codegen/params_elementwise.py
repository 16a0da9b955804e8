"""Parameters of the small row-wise templates: RMSNorm, RoPE, hc_expand, add and embed."""

from __future__ import annotations

from math import prod
from typing import Any

from v4c.codegen.params import Shapes, template
from v4c.codegen.params_hc import pow2
from v4c.codegen.render import Params

MAX_BLOCK = 1024  # columns per program of the copy kernels (hc_expand, embed, add)


@template("rms_norm")
class RmsNorm(Params):
    dim: int
    weighted: bool
    eps: float
    block: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], inputs: Shapes) -> RmsNorm:
        if attrs.get("inline"):
            raise ValueError("rms_norm: no Triton template computes the official bf16 q norm")
        dim = inputs[0][0][-1]
        return cls(dim=dim, weighted=attrs["weighted"], eps=attrs["eps"], block=pow2(dim))


@template("rope")
class Rope(Params):
    dim: int
    rope_dim: int
    heads: int  # rows per token (the dims between [B,T] and the last)
    inverse: bool
    theta: float
    yarn: tuple[float, int, float, float] | None
    block_nope: int  # 0 when every channel rotates
    block_pairs: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], inputs: Shapes) -> Rope:
        shape = inputs[0][0]
        dim, rope_dim = shape[-1], attrs["rope_dim"]
        return cls(
            dim=dim, rope_dim=rope_dim, heads=prod(shape[2:-1]), inverse=attrs["inverse"],
            theta=attrs["theta"], yarn=attrs["yarn"],
            block_nope=pow2(dim - rope_dim) if dim > rope_dim else 0,
            block_pairs=pow2(rope_dim // 2),
        )  # fmt: skip


@template("hc_expand")
class HcExpand(Params):
    mult: int
    dim: int
    block_d: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], inputs: Shapes) -> HcExpand:
        dim = inputs[0][0][-1]
        return cls(mult=attrs["mult"], dim=dim, block_d=min(MAX_BLOCK, pow2(dim)))


@template("add")
class Add(Params):
    block: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], inputs: Shapes) -> Add:
        return cls(block=MAX_BLOCK)


@template("embed")
class Embed(Params):
    dim: int
    block_d: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], inputs: Shapes) -> Embed:
        dim = inputs[1][0][1]
        return cls(dim=dim, block_d=min(MAX_BLOCK, pow2(dim)))
