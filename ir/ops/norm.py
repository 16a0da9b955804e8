"""RMSNorm (V4_REFERENCE §4), its fusion with the RoPE after it, and a layer's q and kv
norms in one launch. A fused op's `run` is the composition of the ops it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from v4c.ir.op import Op, register
from v4c.ir.ops.rope import Rope, _Rotary


@register
@dataclass(frozen=True)
class RmsNorm(Op):
    """RMSNorm over the last dim with a weight; `weighted=False`: the per-head q norm."""

    kind = "rms_norm"
    rounding_attrs = ("inline",)
    eps: float = 1e-6
    weighted: bool = True
    inline: bool = False  # numerics: official: the weightless q norm op by op in bf16 (§12.1)

    def operand_roles(self):
        return ("x", "weight") if self.weighted else ("x",)

    def infer(self, ins):
        x = ins[0]
        self.expect(not (self.inline and self.weighted), "inline is the weightless q norm's")
        if self.weighted:
            self.expect(ins[1].shape == (x.shape[-1],), f"weight {ins[1]} for {x}")
        return (x,)

    def run(self, ins):
        from v4c.ir.semantics.norm import inline_q_norm, rms_norm

        if self.inline:
            return (inline_q_norm(ins[0], self.eps),)
        return (rms_norm(ins[0], ins[1] if self.weighted else None, self.eps),)


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
