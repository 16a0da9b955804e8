"""Parameters of the lightning indexer template: one set per (heads, head dim, top-k) of a layer."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from v4c.codegen.ops.attention import SPLIT_STEPS
from v4c.codegen.params import Dots, Operands, Precision, dot_precision, template, tile
from v4c.ir.types import ir_dtype


PROGRAMS = 128  # programs a query's scores and its select aim at (an H100/H200 has 132 SMs)


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
    block_n: int  # entries per dot (its N; the heads are its M)
    block_s: int  # entries per scoring program
    block: int  # scores per step of a pass over the candidates
    part: int  # scores per `select` program (its part of a query's row)
    sim: bool  # numerics: official: Hadamard + FP4 q (the FP8 qr is its linear's input's)
    round_bf16: bool  # ... with bf16 activations: the official bf16 rounding points too

    @model_validator(mode="after")
    def _pairs(self) -> IndexerTopk:
        rope, dim = self.rope_dim, self.head_dim
        if rope < 2 or rope % 2 or dim % 2 or rope > dim:
            raise ValueError(f"rope_dim {rope}: even, >= 2, <= head_dim {dim} (even)")
        if self.sim and dim & (dim - 1):
            raise ValueError(
                f"indexer_topk: the Hadamard of q needs a power-of-two head_dim, not {dim}"
            )
        return self

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> IndexerTopk:
        """Blocks from the cache length C: a dot takes about C / PROGRAMS entries (at most 64;
        one size whatever the step, so a score never depends on the step's size); a step of
        few tokens a row (decode, verify) spreads each query over about PROGRAMS programs to
        score and to select, a prefill gives a program up to 256 entries to score and 8192 to
        select (its many queries fill the GPU)."""
        heads, (_, entries, head_dim) = ops["weights"].shape[-1], ops["keys"].shape  # [N, C, di]
        share = -(-entries // PROGRAMS)  # entries a program takes to spread a query over many
        block_n = tile(share, hi=64)
        few = ops["q"].shape[1] <= SPLIT_STEPS  # q [B, T, Hi * di]
        return cls(
            heads=heads, head_dim=head_dim, rope_dim=attrs["rope_dim"], topk=attrs["topk"],
            ratio=attrs["ratio"], theta=attrs["theta"], yarn=attrs["yarn"],
            precision=dot_precision([ops["keys"].dtype]), block_n=block_n,
            block_s=tile(share if few else entries, lo=block_n, hi=256),
            block=tile(entries, hi=4096), part=tile(share, lo=128, hi=8192) if few else
            tile(entries, hi=8192), sim=bool(attrs.get("sim")),
            round_bf16=bool(attrs.get("sim")) and ir_dtype(ops["weights"].dtype) == "bf16",
        )  # fmt: skip
