"""The lightning indexer (V4_REFERENCE §7): `indexer_topk` chooses each query's compressed
entries in one op; with its heads split by the `shard` pass, `indexer_score` (this rank's
heads' partial scores) -> all_reduce -> `indexer_select` (the top-k) compute the same.

Shape legend: B rows, T tokens, N cache rows, C compressed entries, K top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

from v4c.ir.op import Op, register
from v4c.ir.types import TensorType
from v4c.spec.schema import CSA_RATIO
from v4c.ir.ops.core import _check_slots
from v4c.ir.ops.rope import _Rotary


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
class IndexerScore(_Rotary):
    """The indexer's score of every compressed entry from this rank's heads (§7): partial
    sums over heads, fp32 [B,T,C], unmasked; `heads` is the layer's total (the scale)."""

    kind = "indexer_score"
    operands = ("q", "weights", "positions", "slots", "keys")
    rounding_attrs = ("sim",)
    heads: int = 1
    sim: bool = False  # numerics: official, as indexer_topk's

    def infer(self, ins):
        q, w, pos, slots, keys = ins
        _check_slots(self, pos, slots, keys)
        _check_indexer(self, q, w, keys)
        self.expect(self.heads % w.shape[-1] == 0, f"{w.shape[-1]} of {self.heads} heads")
        return (TensorType((*pos.shape, keys.shape[1]), "fp32"),)

    def run(self, ins):
        from v4c.ir.semantics.indexer import indexer_score

        q, w, pos, slots, keys = ins
        freqs = self.freqs(q.device)
        scores = indexer_score(
            q, w, pos, keys[slots], rope_freqs=freqs, sim=self.sim, heads=self.heads
        )
        return (scores.float(),)


@register
@dataclass(frozen=True)
class IndexerSelect(Op):
    """The top-`topk` visible entries of the summed scores (the rule of `indexer_topk`)."""

    kind = "indexer_select"
    operands = ("scores", "positions")
    topk: int = 512
    ratio: int = CSA_RATIO

    def infer(self, ins):
        scores, pos = ins
        self.expect(scores.shape[:2] == pos.shape, f"scores {scores} for positions {pos}")
        return (TensorType((*pos.shape, self.topk), "i64"),)

    def run(self, ins):
        from v4c.ir.semantics.indexer import indexer_select

        scores, pos = ins
        return (indexer_select(scores, pos, topk=self.topk, ratio=self.ratio),)
