"""The attention ops that keep state: the KV compressor, the lightning indexer, sparse
attention over window + compressed entries, and the grouped output projection.

Caches are operands: a `state` node feeds the op that writes it, and an op that writes a
cache others read (the compressor) returns it, so readers are ordered after the writer.
A cache is read only by its writer (the window) or through the writer's result (the
compressed entries), so a writer whose result is unused is dead like any other op.
Shape legend: B rows, T tokens, D hidden, H heads, d head dim, c compressor width, m ratio,
C = S/m compressed entries, W window, K top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

from v4c.ir.op import Op, register
from v4c.ir.ops.core import _Rotary
from v4c.ir.types import TensorType
from v4c.spec.schema import CSA_RATIO, coff


@register
@dataclass(frozen=True)
class Compressor(_Rotary):
    """Gated pooling of every `ratio` tokens into one compressed entry (§6); appends the
    entries this step completes to `cache` and keeps partial windows in the state."""

    kind = "compressor"
    operands = ("x", "positions", "wkv", "wgate", "ape", "norm", "state_kv", "state_score", "cache")
    aliases = {0: 8}  # returns the cache it appended to
    ratio: int = CSA_RATIO
    eps: float = 1e-6
    sim: str = (
        "none"  # numerics: official rounds new entries: "fp8" (non-RoPE dims), "fp4" (Hadamard)
    )

    def infer(self, ins):
        x, pos, wkv, wgate, ape, norm, skv, sscore, cache = ins
        k, c = coff(self.ratio), norm.shape[0]
        self.expect(wkv.shape == wgate.shape == (k * c, x.shape[-1]), f"wkv {wkv} for {x}")
        self.expect(ape.shape == (self.ratio, k * c), f"ape {ape}")
        self.expect(skv.shape[1:] == sscore.shape[1:] == (k * self.ratio, k * c), f"state {skv}")
        self.expect(cache.shape[-1] == c, f"cache {cache} for width {c}")
        return (cache,)

    def run(self, ins):
        from v4c.ir.semantics.compressor import compress

        x, pos, wkv, wgate, ape, norm, skv, sscore, cache = ins
        compress(
            x, pos, wkv, wgate, ape, norm, ratio=self.ratio, rope_freqs=self.freqs(x.device),
            rope_dim=self.rope_dim, eps=self.eps, state_kv=skv, state_score=sscore, cache=cache,
        )  # fmt: skip
        if self.sim != "none":
            self._round_new_entries(pos, cache)
        return (cache,)

    def _round_new_entries(self, pos, cache) -> None:
        """The official rounding of the entries this step completed, in place (§6.3 step 3)."""
        from v4c.ir.semantics.quant import fp4_sim, fp8_sim, hadamard

        for b in range(pos.shape[0]):
            lo, hi = int(pos[b, 0]) // self.ratio, int(pos[b, -1] + 1) // self.ratio
            new = cache[b, lo:hi]
            if self.sim == "fp8":
                nope = new.shape[-1] - self.rope_dim
                new[..., :nope] = fp8_sim(new[..., :nope].float(), block=64).to(new.dtype)
            else:
                new.copy_(fp4_sim(hadamard(new.float()), block=32).to(new.dtype))


@register
@dataclass(frozen=True)
class IndexerTopk(_Rotary):
    """The lightning indexer's choice of compressed entries per query (§7)."""

    kind = "indexer_topk"
    operands = ("qr", "x", "positions", "wq_b", "weights_proj", "keys")
    topk: int = 512
    ratio: int = CSA_RATIO
    sim: bool = False  # numerics: official: FP8 input of wq_b, Hadamard + FP4 q

    def infer(self, ins):
        qr, x, pos, wq_b, proj, keys = ins
        heads, dim = proj.shape[0], keys.shape[-1]
        self.expect(wq_b.shape == (heads * dim, qr.shape[-1]), f"wq_b {wq_b} for {heads}x{dim}")
        return (TensorType((*pos.shape, self.topk), "i64"),)

    def run(self, ins):
        from v4c.ir.semantics.indexer import indexer_topk

        qr, x, pos, wq_b, proj, keys = ins
        return (
            indexer_topk(
                qr, x, pos, wq_b, proj, keys, topk=self.topk, ratio=self.ratio,
                rope_freqs=self.freqs(x.device), rope_dim=self.rope_dim, sim=self.sim,
            ),
        )  # fmt: skip


@register
@dataclass(frozen=True)
class SparseAttention(Op):
    """One softmax with a per-head sink over the sliding window and, for ratio > 0, the
    compressed entries (all visible ones for HCA, the indexer's top-k for CSA) (§8).
    Writes this step's kv into the window ring buffer."""

    kind = "sparse_attention"
    ratio: int = 0
    window: int = 128
    softmax_scale: float = 1.0

    def operand_roles(self):
        roles = ("q", "kv", "positions", "sink", "window_cache")
        if self.ratio:
            roles += ("compressed",)
        if self.ratio == CSA_RATIO:
            roles += ("topk_idx",)
        return roles

    def infer(self, ins):
        q, kv, pos, sink, window = ins[:5]
        self.expect(kv.shape == (*q.shape[:2], q.shape[-1]), f"kv {kv} for q {q}")
        self.expect(
            sink.shape == (q.shape[2],) and window.shape[1:] == (self.window, q.shape[-1]),
            f"{sink} {window}",
        )
        return (q,)

    def run(self, ins):
        from v4c.ir.semantics.attention import sparse_attention

        q, kv, pos, sink, window = ins[:5]
        compressed = ins[5] if self.ratio else None
        topk = ins[6] if self.ratio == CSA_RATIO else None
        out = sparse_attention(
            q, kv, pos, sink, window_cache=window, compressed=compressed, ratio=self.ratio,
            topk_idx=topk, softmax_scale=self.softmax_scale,
        )  # fmt: skip
        return (out,)


@register
@dataclass(frozen=True)
class GroupedLinear(Op):
    """wo_a: each group of H/G heads projected on its own to R dims (§8.4)."""

    kind = "grouped_linear"
    operands = ("o", "weight")
    groups: int = 1

    def infer(self, ins):
        o, w = ins
        *bt, h, d = o.shape
        self.expect(
            w.shape[1] * self.groups == h * d and w.shape[0] % self.groups == 0, f"{w} for {o}"
        )
        return (o.with_shape(*bt, w.shape[0]),)

    def run(self, ins):
        from v4c.ir.semantics.attention import grouped_out_proj

        return (grouped_out_proj(*ins, self.groups),)
