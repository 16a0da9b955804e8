"""Sparse attention (V4_REFERENCE §8): one softmax with a per-head sink over the sliding
window and the compressed entries. It reads and writes caches by the convention of
`v4c.ir.ops.core`. (The output projection wo_a is a GEMM: `v4c.ir.ops.gemm`.)

Shape legend: B rows, T tokens, N cache rows, H heads, d head dim, W window.
"""

from __future__ import annotations

from dataclasses import dataclass

from v4c.ir.op import Op, register
from v4c.spec.schema import CSA_RATIO
from v4c.ir.ops.core import _check_slots


@register
@dataclass(frozen=True)
class SparseAttention(Op):
    """One softmax with a per-head sink over the sliding window and, for ratio > 0, the
    compressed entries (all visible ones for HCA, the indexer's top-k for CSA) (§8).
    Writes this step's kv into the window ring buffer."""

    kind = "sparse_attention"
    rounding_attrs = ("round_probs",)
    ratio: int = 0
    window: int = 128
    softmax_scale: float = 1.0
    round_probs: bool = False  # numerics: official: probabilities in bf16 before P·V (§8.2)

    def operand_roles(self):
        roles = ("q", "kv", "positions", "slots", "sink", "window_cache")
        if self.ratio:
            roles += ("compressed",)
        if self.ratio == CSA_RATIO:
            roles += ("topk_idx",)
        return roles

    def infer(self, ins):
        q, kv, pos, slots, sink, window = ins[:6]
        _check_slots(self, pos, slots, *ins[5:7])
        self.expect(kv.shape == (*q.shape[:2], q.shape[-1]), f"kv {kv} for q {q}")
        self.expect(
            sink.shape == (q.shape[2],) and window.shape[1:] == (self.window, q.shape[-1]),
            f"{sink} {window}",
        )
        return (q,)

    def run(self, ins):
        from v4c.ir.semantics.attention import sparse_attention

        q, kv, pos, slots, sink, window = ins[:6]
        compressed = ins[6] if self.ratio else None
        topk = ins[7] if self.ratio == CSA_RATIO else None
        out = sparse_attention(
            q, kv, pos, sink, slots=slots, window_cache=window, compressed=compressed,
            ratio=self.ratio, topk_idx=topk, softmax_scale=self.softmax_scale,
            round_probs=self.round_probs,
        )  # fmt: skip
        return (out,)
