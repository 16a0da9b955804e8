"""Parameters of the KV compressor template: one set per (entry width, ratio, RoPE) of a layer."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from v4c.codegen.params import Operands, Template, template
from v4c.envs import triton_interpret
from v4c.spec.schema import coff


@template("compressor")
class Compressor(Template):
    width: int  # c, channels of one compressed entry
    ratio: int  # m, tokens per window
    overlap: bool  # ratio 4 (CSA): an entry pools two half windows
    rope_dim: int
    eps: float
    theta: float
    yarn: tuple[float, int, float, float] | None
    sim: str  # numerics official: "fp8" (non-RoPE dims), "fp4" (Hadamard) rounding, or "none"
    # Triton's interpreter: a program pools an entry's channels whole (the template's BLOCK_C)
    wide: bool = Field(default_factory=triton_interpret)

    @model_validator(mode="after")
    def _pairs(self) -> Compressor:
        if self.rope_dim < 2 or self.rope_dim % 2 or self.width % 2 or self.rope_dim > self.width:
            raise ValueError(f"rope_dim {self.rope_dim}: even, >= 2, <= width {self.width} (even)")
        if self.overlap != (coff(self.ratio) == 2):
            raise ValueError(f"overlap is {self.overlap} for ratio {self.ratio}")
        if self.sim == "fp4" and (self.width & (self.width - 1) or not 32 <= self.width <= 512):
            raise ValueError(f"sim 'fp4': a power-of-two width in 32..512, not {self.width}")
        return self

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> Compressor:
        (width,) = ops["norm"].shape  # [c]
        return cls(
            width=width, ratio=attrs["ratio"], overlap=coff(attrs["ratio"]) == 2,
            rope_dim=attrs["rope_dim"], eps=attrs["eps"], theta=attrs["theta"], yarn=attrs["yarn"],
            sim=attrs.get("sim", "none"),
        )  # fmt: skip
