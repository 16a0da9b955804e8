"""The lightning indexer (V4_REFERENCE.md §7): which compressed entries each CSA query attends to.

It scores every visible entry of the indexer's own compressed-key cache (filled by `compress`
with c = index head dim, ratio 4, before this runs, so an entry completed at this step is
selectable) and keeps the top k. With `sim` (numerics: official) q is Hadamard-rotated and
rounded to FP4 as the official code does (the Hadamard is orthonormal, so without the rounding
it would not change q·k), and q, the head weights and the scores are rounded to the activation
dtype where the official code holds them in bf16 (V4_REFERENCE §12.1): top-k then runs on bf16
scores, so exact ties are common and the tie rule below matters.

Selection: the `topk` highest-scoring visible entries; picks past the visible entries are -1.
Ties go to the lower entry index. The official code calls `torch.topk` over the entries stored
so far, which leaves the order of exactly equal scores unspecified and dependent on how many
entries are stored; exact ties do happen (a score is exactly 0 when every head's ReLU is), and
a fixed rule is what makes a chunked prefill choose exactly what a one-shot prefill chooses.
Without exact ties both rules pick the same set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from v4c.ir.semantics.quant import fp4_sim, hadamard, round_to
from v4c.ir.semantics.rope import apply_rope
from v4c.ir.semantics.invariant import bmm


def indexer_score(
    q: Tensor, w: Tensor, positions: Tensor, keys: Tensor,
    *, rope_freqs: Tensor, sim: bool = False, heads: int = 0,
) -> Tensor:  # fmt: skip
    """score[b, t, s] = sum_h w'[b,t,h] * ReLU(q'[b,t,h] · keys[b,s]), fp32 [B, T, C], unmasked.

    q [B, T, Hi*di] = qr · wq_bᵀ and w [B, T, Hi] = x · weights_projᵀ are the projections
    (plan-level `linear` nodes, in the activation dtype); q' = RoPE(q) per head (no norm),
    w' = w * di^-1/2 * Hi^-1/2. `sim` (numerics: official) computes what the official indexer
    computes (§7, §12.1): q' Hadamard-rotated and rounded to FP4 (the keys were, by their
    compressor; the FP8 rounding of qr is the wq_b linear's input's), and, with activations
    in bf16, the official bf16 rounding points, each marked `# official:` below. Without
    `sim` everything after the inputs stays fp32. Activations in fp32 make the bf16 points
    no-ops. `heads`: the layer's indexer heads when q and w hold a slice of them (one TP
    rank's, whose partial scores sum over the ranks to the whole); 0: all are here."""
    n_heads, head_dim = w.shape[-1], keys.shape[-1]
    scale = (head_dim * (heads or n_heads)) ** -0.5
    act = w.dtype  # the activation dtype: where the official code holds a bf16 tensor
    q = q.unflatten(-1, (n_heads, head_dim))  # [B, T, Hi, di]
    q = apply_rope(q if sim else q.float(), positions, rope_freqs)  # official: RoPE writes bf16
    if sim:
        q = fp4_sim(hadamard(q))
    w = w.float() * scale
    if sim:  # official: weights_proj's bf16 output times the scale is bf16
        w = round_to(w, act)
    dots = bmm(q.float(), keys.float())  # [B, T, Hi, C]
    if not sim:
        return (dots.relu() * w[..., None]).sum(2)
    dots = round_to(dots, act).relu()  # official: the q·k einsum writes bf16
    weighted = round_to(dots * w[..., None], act)  # official: each head's score is bf16
    return round_to(weighted.sum(2), act)  # official: the sum over heads is bf16


def indexer_topk(
    q: Tensor, w: Tensor, positions: Tensor, keys: Tensor,
    *, slots: Tensor, topk: int, ratio: int, rope_freqs: Tensor, rope_dim: int, sim: bool = False,
) -> Tensor:  # fmt: skip
    """The top-`topk` visible entries per query: LongTensor [B, T, topk], -1 where fewer exist.

    q [B, T, Hi*di] and w [B, T, Hi] as `indexer_score` takes them, positions [B, T],
    keys [N, C, di] (indexer compressed cache), slots [B]: step row b reads cache row
    slots[b]. Entry w is visible to the query at position i iff w < (i+1) // ratio."""
    if 2 * rope_freqs.numel() != rope_dim:
        raise ValueError(f"rope_freqs has {rope_freqs.numel()} pairs, rope_dim is {rope_dim}")
    scores = indexer_score(q, w, positions, keys[slots], rope_freqs=rope_freqs, sim=sim)
    return indexer_select(scores, positions, topk=topk, ratio=ratio)


def indexer_select(scores: Tensor, positions: Tensor, *, topk: int, ratio: int) -> Tensor:
    """The top-`topk` visible entries of `scores` [B, T, C] per query: [B, T, topk] int64, -1
    past the visible ones (the selection rule of the module doc)."""
    entry = torch.arange(scores.shape[-1], device=scores.device)  # [C]
    visible = entry < ((positions + 1) // ratio)[..., None]  # [B, T, C]
    scores = scores.masked_fill(~visible, float("-inf"))
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :topk]
    order = order.masked_fill(~visible.gather(-1, order), -1)
    missing = topk - order.shape[-1]  # the cache holds fewer than topk entries
    return torch.nn.functional.pad(order, (0, missing), value=-1) if missing else order
