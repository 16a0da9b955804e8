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
from v4c.ir.ops.norm import RmsNormRope
from v4c.ir.ops.rope import Rope, _Rotary


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


@register
@dataclass(frozen=True)
class SparseAttentionRope(_Rotary):
    """sparse_attention with the RoPE around it in its own launch, so neither runs as a
    small launch of its own at decode: `q_norm`, the weightless per-head q RMSNorm + RoPE
    (the rms_norm_rope before it) on the q it loads; `o_rope`, the inverse RoPE (the rope
    after it) on each output row before it is written. Operands are sparse_attention's."""

    kind = "sparse_attention_rope"
    rounding_attrs = ("round_probs", "inline")
    ratio: int = 0
    window: int = 128
    softmax_scale: float = 1.0
    round_probs: bool = False  # as SparseAttention's
    q_norm: bool = False
    eps: float = 1e-6  # the q norm's
    inline: bool = False  # the q norm's (numerics: official, as RmsNorm's)
    o_rope: bool = False

    @classmethod
    def of(cls, op: Op, rotary: _Rotary) -> SparseAttentionRope:
        """`op` (a sparse_attention, or one of these) with the RoPE of `rotary`, folding
        nothing more than it did."""
        if isinstance(op, cls):
            return op
        fields = dict(ratio=op.ratio, window=op.window, softmax_scale=op.softmax_scale)
        rope = dict(rope_dim=rotary.rope_dim, theta=rotary.theta, yarn=rotary.yarn)
        return cls(**rope, **fields, round_probs=op.round_probs)

    def operand_roles(self):
        return self._attention().operand_roles()

    def infer(self, ins):
        return self._attention().infer(ins)

    def run(self, ins):
        q, positions = ins[0], ins[2]
        if self.q_norm:
            norm = RmsNormRope(self.rope_dim, self.theta, self.yarn, eps=self.eps,
                               weighted=False, inline=self.inline)  # fmt: skip
            (q,) = norm.run([q, positions])
        (out,) = self._attention().run([q, *ins[1:]])
        if self.o_rope:
            (out,) = Rope(self.rope_dim, self.theta, self.yarn, inverse=True).run([out, positions])
        return (out,)

    def _attention(self) -> SparseAttention:
        return SparseAttention(self.ratio, self.window, self.softmax_scale, self.round_probs)
