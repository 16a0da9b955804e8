"""Parameters of the KV compressor template: one set per (entry width, ratio, RoPE) of a layer."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from v4c.codegen.params import Operands, Template, template
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

    @model_validator(mode="after")
    def _pairs(self) -> Compressor:
        if self.rope_dim < 2 or self.rope_dim % 2 or self.width % 2 or self.rope_dim > self.width:
            raise ValueError(f"rope_dim {self.rope_dim}: even, >= 2, <= width {self.width} (even)")
        if self.overlap != (coff(self.ratio) == 2):
            raise ValueError(f"overlap is {self.overlap} for ratio {self.ratio}")
        return self

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> Compressor:
        if attrs.get("sim", "none") != "none":
            raise ValueError(f"compressor: no Triton template for sim={attrs['sim']!r} rounding")
        (width,) = ops["norm"].shape  # [c]
        return cls(
            width=width, ratio=attrs["ratio"], overlap=coff(attrs["ratio"]) == 2,
            rope_dim=attrs["rope_dim"], eps=attrs["eps"], theta=attrs["theta"], yarn=attrs["yarn"],
        )  # fmt: skip
