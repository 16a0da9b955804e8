"""Sources and sinks, dense ops, norms, RoPE and the hyper-connection ops.

Shape legend: B batch rows, T tokens per row in the step, D hidden, H heads, d head dim,
n HC streams, V vocabulary. Semantics modules are imported inside `run` so that building
and compiling a graph does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from v4c.ir.op import Op, register
from v4c.ir.types import TensorType, torch_dtype

Yarn = (
    tuple[float, int, float, float] | None
)  # factor, original max positions, beta_fast, beta_slow


# -- sources and sinks --------------------------------------------------------------------


@dataclass(frozen=True)
class _Source(Op):
    shape: tuple = ()
    dtype: str = "fp32"

    def infer(self, ins: Sequence[TensorType]) -> tuple[TensorType, ...]:
        return (TensorType(tuple(self.shape), self.dtype),)


@register
@dataclass(frozen=True)
class Input(_Source):
    """A per-step input: token ids, positions."""

    kind = "input"
    source = "input"
    key: str = ""


@register
@dataclass(frozen=True)
class Param(_Source):
    """A checkpoint tensor (official name); `stack` > 0: one per expert, stacked on dim 0.
    `split`: the piece of it one rank holds, `(dim, parts, axis)` each (`v4c.spec.parallel`;
    `shape` is the piece's); empty: the whole tensor."""

    kind = "param"
    source = "param"
    tensor: str = ""
    stack: int = 0
    split: tuple = ()


@register
@dataclass(frozen=True)
class State(_Source):
    """A cache buffer that lives across steps; `fill` is its value before the first step."""

    kind = "state"
    source = "state"
    key: str = ""
    fill: str = "zeros"  # or "-inf"


@register
@dataclass(frozen=True)
class Output(Op):
    kind = "output"
    operands = ("value",)
    results = ()
    side_effects = True
    key: str = ""

    def infer(self, ins):
        return ()

    def run(self, ins):
        return ()


# -- dense ----------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class Embed(Op):
    kind = "embed"
    operands = ("ids", "weight")

    def infer(self, ins):
        ids, w = ins
        self.expect(ids.dtype == "i64" and len(w.shape) == 2, f"bad operands {ids}, {w}")
        return (TensorType((*ids.shape, w.shape[1]), w.dtype),)

    def run(self, ins):
        ids, w = ins
        return (w[ids],)


@register
@dataclass(frozen=True)
class Linear(Op):
    """y = x Wᵀ, fp32 accumulation; `out_dtype` fp32 for the lm_head. `act_quant` (numerics
    official, an FP8 weight): x rounded to FP8 per 128-block first, as the official W8A8
    GEMM does (§12); the FP8 weight is read as stored."""

    kind = "linear"
    operands = ("x", "weight")
    quantised_operands = frozenset({"weight"})
    rounding_attrs = ("act_quant",)
    out_dtype: str = "bf16"
    act_quant: bool = False

    def infer(self, ins):
        x, w = ins
        self.expect(len(w.shape) == 2 and x.shape[-1] == w.shape[1], f"{x} x {w}ᵀ")
        return (TensorType((*x.shape[:-1], w.shape[0]), self.out_dtype),)

    def run(self, ins):
        x, w = ins
        from v4c.ir.semantics.invariant import matmul

        held = x.dtype if x.dtype.is_floating_point else None  # the run's dtype for IR-bf16
        if self.act_quant:
            from v4c.ir.semantics.quant import act_quant_fp8

            x = act_quant_fp8(x.float())
        return (matmul(x.float(), w.float()).to(torch_dtype(self.out_dtype, held)),)


@register
@dataclass(frozen=True)
class SplitHeads(Op):
    """[B,T,H*d] -> [B,T,H,d]."""

    kind = "split_heads"
    operands = ("x",)
    aliases = {0: 0}
    heads: int = 1

    def infer(self, ins):
        (x,) = ins
        self.expect(isinstance(x.shape[-1], int) and x.shape[-1] % self.heads == 0, f"{x}")
        return (x.with_shape(*x.shape[:-1], self.heads, x.shape[-1] // self.heads),)

    def run(self, ins):
        (x,) = ins
        return (x.unflatten(-1, (self.heads, -1)),)


@register
@dataclass(frozen=True)
class TakeLast(Op):
    """[B,T,...] -> [B,1,...]: the last token of each row (logits only where sampled)."""

    kind = "take_last"
    operands = ("x",)
    aliases = {0: 0}  # a strided view of x

    def infer(self, ins):
        (x,) = ins
        return (x.with_shape(x.shape[0], 1, *x.shape[2:]),)

    def run(self, ins):
        (x,) = ins
        return (x[:, -1:],)


@register
@dataclass(frozen=True)
class Add(Op):
    kind = "add"
    operands = ("a", "b")

    def infer(self, ins):
        a, b = ins
        self.expect(a.shape == b.shape, f"{a} + {b}")
        return (a,)

    def run(self, ins):
        a, b = ins
        return ((a.float() + b.float()).to(a.dtype),)


# -- norms and RoPE -----------------------------------------------------------------------


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


@dataclass(frozen=True)
class _Rotary(Op):
    rope_dim: int = 64
    theta: float = 10000.0
    yarn: Yarn = None

    def freqs(self, device: Any):
        import torch

        return _freqs(self.rope_dim, self.theta, self.yarn, torch.device(device))


@lru_cache(maxsize=64)
def _freqs(rope_dim: int, theta: float, yarn: Yarn, device: Any = "cpu"):
    """The RoPE frequencies of a layer, made once per device (a step never copies a table)."""
    from v4c.ir.semantics.rope import rope_freqs

    keys = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow")
    return rope_freqs(rope_dim, theta, dict(zip(keys, yarn)) if yarn else None).to(device)


@register
@dataclass(frozen=True)
class Rope(_Rotary):
    """Interleaved RoPE on the trailing `rope_dim` channels; `inverse` rotates back."""

    kind = "rope"
    operands = ("x", "positions")
    inverse: bool = False

    def infer(self, ins):
        x, pos = ins
        self.expect(pos.shape == x.shape[:2] and pos.dtype == "i64", f"positions {pos} for {x}")
        self.expect(self.rope_dim <= x.shape[-1], f"rope_dim {self.rope_dim} > {x}")
        return (x,)

    def run(self, ins):
        from v4c.ir.semantics.rope import apply_rope

        x, pos = ins
        return (apply_rope(x, pos, self.freqs(x.device), inverse=self.inverse),)


@register
@dataclass(frozen=True)
class QuantSim(Op):
    """The official code's rounding of an activation (numerics: official, §12): FP8 with
    power-of-two scales per `block` values of the last dim, on its first `dims` channels
    (0: all) — the input of an FP8 GEMM (block 128) or the non-RoPE KV dims (block 64)."""

    kind = "quant_sim"
    operands = ("x",)
    block: int = 128
    dims: int = 0

    def roundings(self):
        return frozenset({("quant_sim", (self.block, self.dims))})

    def infer(self, ins):
        return (ins[0],)

    def run(self, ins):
        import torch

        from v4c.ir.semantics.quant import act_quant_fp8

        (x,) = ins
        if not self.dims:
            return (act_quant_fp8(x.float(), self.block).to(x.dtype),)
        head = act_quant_fp8(x[..., : self.dims].float(), self.block).to(x.dtype)
        return (torch.cat((head, x[..., self.dims :]), dim=-1),)


# -- hyper-connections ----------------------------------------------------------------------


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
