"""Parameters of the attention template: sparse attention with a sink (the grouped output
projection is a GEMM, `codegen/ops/gemm.py`). Block sizes come from the dims; `tl.dot`
needs at least 16 on every side, so small head counts and row blocks are padded up to 16
and masked."""

from __future__ import annotations

from typing import Any

from v4c.codegen.params import Dots, Operands, Precision, dot_precision, template, tile
from v4c.spec.schema import CSA_RATIO


@template("sparse_attention")
class SparseAttention(Dots):
    dim: int  # d, the head dim (= the kv width)
    heads: int
    window: int
    ratio: int  # 0: window only; 4: CSA (top-k picks); else HCA (every visible entry)
    topk: int  # K picks per token (CSA), else 0
    softmax_scale: float
    precision: Precision
    block_h: int  # heads per program
    block_n: int  # keys per online-softmax step
    block_d: int
    num_warps: int  # 8 for wide heads: q, the running output and a key tile are [., d] fp32

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> SparseAttention:
        if attrs.get("round_probs"):
            raise ValueError("sparse_attention: no Triton template rounds P to bf16 (official)")
        (_, _, heads, dim), ratio = ops["q"].shape, attrs["ratio"]
        keys = ("q", "kv", "window_cache") + (("compressed",) if ratio else ())
        return cls(
            dim=dim, heads=heads, window=attrs["window"], ratio=ratio,
            topk=ops["topk_idx"].shape[-1] if ratio == CSA_RATIO else 0,
            softmax_scale=attrs["softmax_scale"],
            precision=dot_precision([ops[k].dtype for k in keys]),
            block_h=tile(heads, hi=16 if dim >= 256 else 32),
            block_n=16 if dim >= 256 else 32, block_d=tile(dim), num_warps=8 if dim >= 256 else 4,
        )  # fmt: skip
