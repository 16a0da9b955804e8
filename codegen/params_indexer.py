"""Parameters of the lightning indexer template: one set per (heads, head dim, top-k) of a layer."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from v4c.codegen.params import Dots, Shapes, template
from v4c.codegen.params_attention import Precision, dot_precision


@template("indexer_topk")
class IndexerTopk(Dots):
    heads: int  # Hi
    head_dim: int  # di, also the width of a compressed key
    rope_dim: int
    topk: int
    ratio: int
    theta: float
    yarn: tuple[float, int, float, float] | None
    precision: Precision  # of the keys: "ieee" (fp32 keys) keeps the scores' dot fp32

    @model_validator(mode="after")
    def _pairs(self) -> IndexerTopk:
        rope, dim = self.rope_dim, self.head_dim
        if rope < 2 or rope % 2 or dim % 2 or rope > dim:
            raise ValueError(f"rope_dim {rope}: even, >= 2, <= head_dim {dim} (even)")
        return self

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], inputs: Shapes) -> IndexerTopk:
        if attrs.get("sim"):
            raise ValueError("indexer_topk: no Triton template simulates the official FP8/FP4 q")
        heads, head_dim = inputs[5][0][0], inputs[6][0][-1]  # weights_proj [Hi, D], keys [N, C, di]
        return cls(
            heads=heads, head_dim=head_dim, rope_dim=attrs["rope_dim"], topk=attrs["topk"],
            ratio=attrs["ratio"], theta=attrs["theta"], yarn=attrs["yarn"],
            precision=dot_precision([inputs[6][1]]),
        )  # fmt: skip
