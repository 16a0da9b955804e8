"""Fused ops made by the fusion passes. Each one's reference semantics is the composition
of the ops it replaces, run through those ops' own `run`, so a fusion changes which kernel
computes a value and never what the value is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from v4c.ir.op import Op, register
from v4c.ir.ops.attention import SparseAttention
from v4c.ir.ops.core import HcHead, HcPost, HcPre, Linear, RmsNorm, Rope, _Rotary, hc_pre_types
from v4c.ir.ops.moe import MoeCombine, MoeGate, MoeSort
from v4c.ir.types import TensorType


@dataclass(frozen=True)
class _HcNorm(Op):
    iters: int = 20
    eps: float = 1e-6  # HC epsilon
    norm_eps: float = 1e-6  # the RMS over the flattened streams inside HC
    rms_eps: float = 1e-6  # the sublayer RMSNorm

    def pre(self, X, fn, base, scale, weight):
        x, post, comb = HcPre(self.iters, self.eps, self.norm_eps).run([X, fn, base, scale])
        (xn,) = RmsNorm(self.rms_eps).run([x, weight])
        return xn, post, comb


@register
@dataclass(frozen=True)
class HcPreNorm(_HcNorm):
    """hc_pre + the RMSNorm after it (the first sublayer, right after hc_expand)."""

    kind = "hc_pre_norm"
    operands = ("X", "fn", "base", "scale", "norm")
    results = ("x", "post", "comb")

    def infer(self, ins):
        return hc_pre_types(self, ins[0], ins[1])

    def run(self, ins):
        return self.pre(*ins)


@dataclass(frozen=True)
class _HcPostNorm(_HcNorm):
    """The kinds that start with an hc_post. `moe`: its sublayer output `a` is not an
    operand but the MoE combine before it (moe_combine with rows and the shared expert),
    computed in the same launch from (y_sorted, rows, shared)."""

    moe: bool = False

    POST: ClassVar[tuple[str, ...]] = ("X", "post", "comb", "fn", "base", "scale", "norm")

    def operand_roles(self):
        return (("y_sorted", "rows", "shared") if self.moe else ("a",)) + self.POST

    def rest(self, ins: list) -> list:
        """The hc_post + pre operands after `a` (or after the combine's three)."""
        return list(ins[3:] if self.moe else ins[1:])

    def a(self, ins: list):
        """The sublayer output hc_post adds: operand `a`, or the combine's result."""
        if not self.moe:
            return ins[0]
        return MoeCombine(with_shared=True, rows=True).run(ins[:3])[0]


@register
@dataclass(frozen=True)
class HcPostPreNorm(_HcPostNorm):
    """hc_post of one sublayer + hc_pre of the next + the next one's RMSNorm."""

    kind = "hc_post_pre_norm"
    results = ("X_next", "x", "post_next", "comb_next")

    def infer(self, ins):
        rest = self.rest(ins)
        return (rest[0], *hc_pre_types(self, rest[0], rest[3]))

    def run(self, ins):
        rest = self.rest(ins)
        (X,) = HcPost().run([self.a(ins), *rest[:3]])
        return (X, *self.pre(X, *rest[3:]))


@register
@dataclass(frozen=True)
class HcPostHeadNorm(_HcPostNorm):
    """hc_post of the last sublayer + hc_head + the final RMSNorm; X_next stays a result
    for the MTP block."""

    kind = "hc_post_head_norm"
    results = ("X_next", "y")

    def infer(self, ins):
        rest = self.rest(ins)
        (y,) = HcHead(self.eps, self.norm_eps).infer([rest[0], rest[3]])
        return (rest[0], y)

    def run(self, ins):
        rest = self.rest(ins)
        (X,) = HcPost().run([self.a(ins), *rest[:3]])
        (y,) = HcHead(self.eps, self.norm_eps).run([X, *rest[3:6]])
        (yn,) = RmsNorm(self.rms_eps).run([y, rest[6]])
        return (X, yn)


@register
@dataclass(frozen=True)
class RmsNormRope(_Rotary):
    """RMSNorm (weighted, or the weightless per-head q norm) with RoPE folded in."""

    kind = "rms_norm_rope"
    rounding_attrs = ("inline",)
    eps: float = 1e-6
    weighted: bool = True
    inline: bool = False  # numerics: official, as RmsNorm's

    def operand_roles(self):
        return ("x", "positions", "weight") if self.weighted else ("x", "positions")

    def infer(self, ins):
        (x,) = self._norm().infer([ins[0], *ins[2:]])
        return self._rope().infer([x, ins[1]])

    def run(self, ins):
        (x,) = self._norm().run([ins[0], *ins[2:]])
        return self._rope().run([x, ins[1]])

    def _norm(self) -> RmsNorm:
        return RmsNorm(self.eps, self.weighted, self.inline)

    def _rope(self) -> Rope:
        return Rope(self.rope_dim, self.theta, self.yarn)


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


@register
@dataclass(frozen=True)
class QkvNorm(_Rotary):
    """The two weighted norms of an attention layer whose inputs are projections of one
    activation: the q latent's RMSNorm and the kv RMSNorm + RoPE, in one launch."""

    kind = "qkv_norm"
    operands = ("q", "kv", "positions", "q_weight", "kv_weight")
    results = ("q", "kv")
    q_eps: float = 1e-6
    kv_eps: float = 1e-6

    def infer(self, ins):
        q, kv, positions, q_weight, kv_weight = ins
        (qn,) = RmsNorm(self.q_eps).infer([q, q_weight])
        (kvn,) = self._kv().infer([kv, positions, kv_weight])
        return qn, kvn

    def run(self, ins):
        q, kv, positions, q_weight, kv_weight = ins
        (qn,) = RmsNorm(self.q_eps).run([q, q_weight])
        (kvn,) = self._kv().run([kv, positions, kv_weight])
        return qn, kvn

    def _kv(self) -> RmsNormRope:
        return RmsNormRope(self.rope_dim, self.theta, self.yarn, eps=self.kv_eps)


@register
@dataclass(frozen=True)
class MoeRoute(MoeGate):
    """moe_gate + the moe_sort of its expert ids, in one launch at decode: (weights, idx) as
    the gate's, (order, offsets) as the sort's, and `rows`, each slot's row in the sorted
    order (the inverse of order: what the combine reads)."""

    kind = "moe_route"
    results = ("weights", "idx", "order", "offsets", "rows")
    local_experts: int = 0  # see _Gate
    num_experts: int = 1  # the sort's groups: the experts (+ 1 for other ranks' with EP)

    def infer(self, ins):
        weights, idx = super().infer(ins)
        return weights, idx, idx, TensorType((self.num_experts + 1,), "i64"), idx

    def run(self, ins):
        from v4c.ir.semantics.moe import sorted_rows

        weights, idx = super().run(ins)
        order, offsets = MoeSort(self.num_experts).run([idx])
        return weights, idx, order, offsets, sorted_rows(order.flatten()).view_as(idx)


@register
@dataclass(frozen=True)
class GateRoute(MoeRoute):
    """The router's projection (a `linear` to fp32 logits) + moe_route, in one launch at
    decode: the gate GEMM's last program to finish routes the tokens. Results: moe_route's,
    then the logits (kept: the route of a longer step reads them in launches of its own)."""

    kind = "gate_route"
    results = ("weights", "idx", "order", "offsets", "rows", "logits")
    quantised_operands = frozenset({"weight"})

    def operand_roles(self):
        return ("x", "weight", *super().operand_roles()[1:])

    def infer(self, ins):
        (logits,) = Linear("fp32").infer(ins[:2])
        return (*super().infer([logits, *ins[2:]]), logits)

    def run(self, ins):
        (logits,) = Linear("fp32").run(ins[:2])
        return (*super().run([logits, *ins[2:]]), logits)
