"""Parameters of the RoPE template (V4_REFERENCE §5): rotation of the last `rope_dim`
channels, YaRN-scaled frequencies made in the kernel."""

from __future__ import annotations

from math import prod
from typing import Any

from v4c.codegen.params import Operands, Template, pow2, template


@template("rope")
class Rope(Template):
    dim: int
    rope_dim: int
    heads: int  # rows per token (the dims between [B,T] and the last)
    inverse: bool
    theta: float
    yarn: tuple[float, int, float, float] | None
    block_nope: int  # 0 when every channel rotates
    block_pairs: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> Rope:
        shape = ops["x"].shape
        dim, rope_dim = shape[-1], attrs["rope_dim"]
        return cls(
            dim=dim, rope_dim=rope_dim, heads=prod(shape[2:-1]), inverse=attrs["inverse"],
            theta=attrs["theta"], yarn=attrs["yarn"],
            block_nope=pow2(dim - rope_dim) if dim > rope_dim else 0,
            block_pairs=pow2(rope_dim // 2),
        )  # fmt: skip
