"""The ops of one rank's part of a computation that the `shard` pass splits, each the piece
before a collective that makes the whole again:

- masked_embed: the embedding rows this rank holds (zeros for ids outside them), summed
  over the ranks by an all_reduce;
- indexer_score + indexer_select: the lightning indexer with its heads split: each rank's
  heads score the entries, an all_reduce sums the scores, then the top-k is chosen (what
  `indexer_topk` computes in one op on one process).
Shape legend: B rows, T tokens, D hidden, V vocabulary (this rank's rows: V/P), C
compressed entries, K top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

from v4c.ir.op import Op, register
from v4c.ir.ops.attention import _check_indexer, _check_slots
from v4c.ir.ops.core import _Rotary
from v4c.ir.types import TensorType
from v4c.spec.schema import CSA_RATIO


@register
@dataclass(frozen=True)
class MaskedEmbed(Op):
    """Rows `first` .. `first` + V/P - 1 of the embedding (`weight` holds them): an id in
    them is looked up, any other id gives a row of zeros."""

    kind = "masked_embed"
    operands = ("ids", "weight", "first")

    def infer(self, ins):
        ids, w, first = ins
        self.expect(ids.dtype == "i64" and len(w.shape) == 2, f"bad operands {ids}, {w}")
        self.expect(first.shape == (1,) and first.dtype == "i64", f"first {first}")
        return (TensorType((*ids.shape, w.shape[1]), w.dtype),)

    def run(self, ins):
        ids, w, first = ins
        local = ids - first  # [B,T]
        mine = (local >= 0) & (local < w.shape[0])
        rows = w[local.clamp(0, w.shape[0] - 1)]  # [B,T,D]
        return (rows * mine.unsqueeze(-1).to(rows.dtype),)


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
        from v4c.ir.semantics.indexer import indexer_scores

        q, w, pos, slots, keys = ins
        freqs = self.freqs(q.device)
        scores = indexer_scores(
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
