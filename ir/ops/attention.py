"""The attention ops that keep state: the KV compressor, the lightning indexer, sparse
attention over window + compressed entries, and the grouped output projection.

Caches are operands: a `state` node feeds the op that writes it, and an op that writes a
cache others read (the compressor) returns it, so readers are ordered after the writer.
Caches have a leading dim of N cache rows; every op that reads or writes one takes the step's
`slots` [B] (i64: the cache row of each step row) and touches only those rows, in place.
A cache is read only by its writer (the window) or through the writer's result (the
compressed entries), so a writer whose result is unused is dead like any other op.
Shape legend: B rows, T tokens, N cache rows, D hidden, H heads, d head dim, c compressor
width, m ratio, C = S/m compressed entries, W window, K top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

from v4c.ir.op import Op, register
from v4c.ir.ops.core import _Rotary
from v4c.ir.types import TensorType
from v4c.spec.schema import CSA_RATIO, coff


def _check_slots(op: Op, pos: TensorType, slots: TensorType, *caches: TensorType) -> None:
    """slots is one i64 cache row per step row; the caches share their number of rows."""
    op.expect(slots.shape == pos.shape[:1] and slots.dtype == "i64", f"slots {slots} for {pos}")
    rows = {c.shape[0] for c in caches}
    op.expect(len(rows) == 1, f"caches {', '.join(map(str, caches))} differ in their rows")


@register
@dataclass(frozen=True)
class Compressor(_Rotary):
    """Gated pooling of every `ratio` tokens into one compressed entry (§6); appends the
    entries this step completes to `cache` and keeps partial windows in the state. Its
    inputs are the projections K = x wkvᵀ and Z = x wgateᵀ (fp32 linears of the plan)."""

    kind = "compressor"
    operands = (
        "k", "z", "positions", "slots", "ape", "norm", "state_kv", "state_score", "cache",
    )  # fmt: skip
    aliases = {0: 8}  # returns the cache it appended to
    rounding_attrs = ("sim",)
    ratio: int = CSA_RATIO
    eps: float = 1e-6
    sim: str = (
        "none"  # numerics: official rounds new entries: "fp8" (non-RoPE dims), "fp4" (Hadamard)
    )

    def infer(self, ins):
        kx, z, pos, slots, ape, norm, skv, sscore, cache = ins
        _check_slots(self, pos, slots, skv, sscore, cache)
        k, c = coff(self.ratio), norm.shape[0]
        self.expect(kx.shape == z.shape == (*pos.shape, k * c), f"K {kx}, Z {z} for {pos}")
        self.expect(ape.shape == (self.ratio, k * c), f"ape {ape}")
        self.expect(skv.shape[1:] == sscore.shape[1:] == (k * self.ratio, k * c), f"state {skv}")
        self.expect(cache.shape[-1] == c, f"cache {cache} for width {c}")
        return (cache,)

    def run(self, ins):
        from v4c.ir.semantics.compressor import compress_projected

        k, z, pos, slots, ape, norm, skv, sscore, cache = ins
        compress_projected(
            k, z, pos, ape, norm, ratio=self.ratio, rope_freqs=self.freqs(k.device),
            rope_dim=self.rope_dim, eps=self.eps, slots=slots, state_kv=skv, state_score=sscore,
            cache=cache, sim=self.sim,
        )  # fmt: skip
        return (cache,)


def _check_indexer(op: Op, q: TensorType, w: TensorType, keys: TensorType) -> None:
    """q [B, T, Hi*di] and w [B, T, Hi] are the indexer's projections (wq_b's and
    weights_proj's `linear` outputs) for keys of width di."""
    heads, dim = w.shape[-1], keys.shape[-1]
    op.expect(q.shape == (*w.shape[:-1], heads * dim), f"q {q} for weights {w} and keys {keys}")


@register
@dataclass(frozen=True)
class IndexerTopk(_Rotary):
    """The lightning indexer's choice of compressed entries per query (§7), from its
    projections q = qr · wq_bᵀ and weights = x · weights_projᵀ (plan-level linears)."""

    kind = "indexer_topk"
    operands = ("q", "weights", "positions", "slots", "keys")
    rounding_attrs = ("sim",)
    topk: int = 512
    ratio: int = CSA_RATIO
    sim: bool = False  # numerics: official: Hadamard + FP4 q, bf16 points

    def infer(self, ins):
        q, w, pos, slots, keys = ins
        _check_slots(self, pos, slots, keys)
        _check_indexer(self, q, w, keys)
        return (TensorType((*pos.shape, self.topk), "i64"),)

    def run(self, ins):
        from v4c.ir.semantics.indexer import indexer_topk

        q, w, pos, slots, keys = ins
        return (
            indexer_topk(
                q, w, pos, keys, slots=slots, topk=self.topk, ratio=self.ratio,
                rope_freqs=self.freqs(q.device), rope_dim=self.rope_dim, sim=self.sim,
            ),
        )  # fmt: skip


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
class GroupedLinear(Op):
    """wo_a: each group of H/G heads projected on its own to R dims (§8.4)."""

    kind = "grouped_linear"
    operands = ("o", "weight")
    quantised_operands = frozenset({"weight"})
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
