"""Parameters of the RMSNorm templates (V4_REFERENCE §4): the plain norm and its fusion
with the RoPE after it (per-head q norm, kv norm)."""

from __future__ import annotations

from typing import Any

from v4c.codegen.params import Operands, Template, pow2, template


@template("rms_norm")
class RmsNorm(Template):
    dim: int
    weighted: bool
    eps: float
    block: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> RmsNorm:
        if attrs.get("inline"):
            raise ValueError("rms_norm: no Triton template computes the official bf16 q norm")
        dim = ops["x"].shape[-1]
        return cls(dim=dim, weighted=attrs["weighted"], eps=attrs["eps"], block=pow2(dim))


@template("rms_norm_rope")
class RmsNormRope(Template):
    dim: int
    rope_dim: int
    heads: int  # rows per token: H for the per-head q norm, 1 for kv
    weighted: bool
    eps: float
    theta: float
    yarn: tuple[float, int, float, float] | None

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> RmsNormRope:
        if attrs.get("inline"):
            raise ValueError("rms_norm_rope: no Triton template computes the official bf16 q norm")
        shape = ops["x"].shape
        return cls(
            dim=shape[-1], rope_dim=attrs["rope_dim"], heads=shape[2] if len(shape) == 4 else 1,
            weighted=attrs["weighted"], eps=attrs["eps"], theta=attrs["theta"], yarn=attrs["yarn"],
        )  # fmt: skip
