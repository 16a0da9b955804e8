"""Parameters of the norm and RoPE templates."""

from __future__ import annotations

from typing import Any

from v4c.codegen.params import Shapes, template
from v4c.codegen.render import Params


@template("rms_norm_rope")
class RmsNormRope(Params):
    dim: int
    rope_dim: int
    heads: int  # rows per token: H for the per-head q norm, 1 for kv
    weighted: bool
    eps: float
    theta: float
    yarn: tuple[float, int, float, float] | None

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], inputs: Shapes) -> RmsNormRope:
        if attrs.get("inline"):
            raise ValueError("rms_norm_rope: no Triton template computes the official bf16 q norm")
        shape = inputs[0][0]
        return cls(
            dim=shape[-1], rope_dim=attrs["rope_dim"], heads=shape[2] if len(shape) == 4 else 1,
            weighted=attrs["weighted"], eps=attrs["eps"], theta=attrs["theta"], yarn=attrs["yarn"],
        )  # fmt: skip
