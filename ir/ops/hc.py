"""The hyper-connection ops (V4_REFERENCE §3) and their fusions with the RMSNorm after them
and the hc_post (or MoE combine) before them. A fused op's `run` is the composition of the
ops it replaces, run through their own `run`.

Shape legend: B rows, T tokens, n HC streams, d hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from v4c.ir.op import Op, register
from v4c.ir.types import TensorType
from v4c.ir.ops.moe import MoeCombine
from v4c.ir.ops.norm import RmsNorm


@register
@dataclass(frozen=True)
class HcExpand(Op):
    kind = "hc_expand"
    operands = ("h",)
    mult: int = 4

    def infer(self, ins):
        (h,) = ins
        return (h.with_shape(*h.shape[:-1], self.mult, h.shape[-1]),)

    def run(self, ins):
        from v4c.ir.semantics.hc import hc_expand

        return (hc_expand(ins[0], self.mult),)


def hc_pre_types(op: Op, X: TensorType, fn: TensorType) -> tuple[TensorType, ...]:
    *bt, n, d = X.shape
    op.expect(fn.shape == ((2 + n) * n, n * d), f"fn {fn} for streams {X}")
    return (
        X.with_shape(*bt, d),
        TensorType((*bt, n), "fp32"),
        TensorType((*bt, n, n), "fp32"),
    )


@register
@dataclass(frozen=True)
class HcPre(Op):
    """Collapse n streams into one sublayer input (Sinkhorn-normalised mixing, §3.1)."""

    kind = "hc_pre"
    operands = ("X", "fn", "base", "scale")
    results = ("x", "post", "comb")
    iters: int = 20
    eps: float = 1e-6
    norm_eps: float = 1e-6

    def infer(self, ins):
        return hc_pre_types(self, ins[0], ins[1])

    def run(self, ins):
        from v4c.ir.semantics.hc import hc_pre

        X, fn, base, scale = ins
        return hc_pre(
            X, fn, base, scale, sinkhorn_iters=self.iters, eps=self.eps, norm_eps=self.norm_eps
        )


@register
@dataclass(frozen=True)
class HcPost(Op):
    """Expand a sublayer output back into n streams and mix the residual (§3.2)."""

    kind = "hc_post"
    operands = ("a", "X", "post", "comb")

    def infer(self, ins):
        a, X, post, comb = ins
        self.expect(a.shape == X.shape[:-2] + X.shape[-1:], f"output {a} for streams {X}")
        return (X,)

    def run(self, ins):
        from v4c.ir.semantics.hc import hc_post

        return (hc_post(*ins),)


@register
@dataclass(frozen=True)
class HcHead(Op):
    """The final collapse of the streams, no Sinkhorn (§3.3)."""

    kind = "hc_head"
    operands = ("X", "fn", "base", "scale")
    eps: float = 1e-6
    norm_eps: float = 1e-6

    def infer(self, ins):
        X, fn = ins[0], ins[1]
        *bt, n, d = X.shape
        self.expect(fn.shape == (n, n * d), f"fn {fn} for streams {X}")
        return (X.with_shape(*bt, d),)

    def run(self, ins):
        from v4c.ir.semantics.hc import hc_head

        X, fn, base, scale = ins
        return (hc_head(X, fn, base, scale, eps=self.eps, norm_eps=self.norm_eps),)


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
