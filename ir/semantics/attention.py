"""Core sparse attention with a sink (V4_REFERENCE.md §5, §8.1-§8.2) and the grouped output
projection (§8.4).

Each query attends, in one softmax, to the raw KV of its sliding window and to a set of
compressed entries (none, all visible ones for HCA, the indexer's top-k for CSA). The single
KV head is both key and value. The sink is a per-head logit that only enlarges the
denominator. Earlier tokens' raw KV comes from a ring buffer (slot = position % W) that this
function also advances; the inverse RoPE of the output (§8.3) is left to the caller. The caches
hold N sequences; step row b reads and writes cache row slots[b] (only those rows, in place).
"""

from __future__ import annotations

import torch
from torch import Tensor

from v4c.ir.semantics.invariant import bmm, matmul
from v4c.ir.semantics.quant import round_to
from v4c.spec.schema import CSA_RATIO


def _window_keys(kv: Tensor, positions: Tensor, ring: Tensor) -> tuple[Tensor, Tensor]:
    """Each query's window in slot order: ([B, T, W, d] keys, [B, T, W] visibility).

    Slot s of query i holds the key of p = i - ((i - s) mod W), the one position of
    (i - W, i] with p % W == s: this step's kv where p >= start, else the ring's slot s (which
    holds the latest position before start with that residue, so p itself); visible iff p >= 0.
    The layout depends on the query's position alone, never on T, so a query's sums run over
    the same slots in the same order in a decode, verify or prefill step (batch invariance)."""
    start, window = positions[:, :1], ring.shape[1]  # [B, 1]
    slot = torch.arange(window, device=positions.device)  # [W]
    query = positions[..., None]  # [B, T, 1]
    pos = query - (query - slot).remainder(window)  # [B, T, W]
    in_step = pos >= start[..., None]
    step_row = (pos - start[..., None]).clamp(0, kv.shape[1] - 1)  # [B, T, W]
    from_step = kv.float()[torch.arange(kv.shape[0])[:, None, None], step_row]  # [B, T, W, d]
    from_ring = ring.float()[:, None].expand(-1, kv.shape[1], -1, -1)  # [B, T, W, d]
    return torch.where(in_step[..., None], from_step, from_ring), pos >= 0


def _compressed_mask(
    positions: Tensor, n_entries: int, ratio: int, topk_idx: Tensor | None
) -> Tensor:
    """[B, T, C] booleans: the top-k entries for CSA, all visible ones (w < (i+1)//ratio) else."""
    if ratio != CSA_RATIO:
        entry = torch.arange(n_entries, device=positions.device)
        return entry < ((positions + 1) // ratio)[..., None]
    if topk_idx is None:
        raise ValueError("CSA attention (ratio 4) needs the indexer's topk_idx")
    mask = torch.zeros(*positions.shape, n_entries + 1, dtype=torch.bool, device=positions.device)
    slot = torch.where(topk_idx >= 0, topk_idx, n_entries)  # -1 goes to a discarded column
    return mask.scatter_(-1, slot, True)[..., :n_entries]


def sparse_attention(
    q: Tensor, kv: Tensor, positions: Tensor, sink: Tensor,
    *, slots: Tensor, window_cache: Tensor, compressed: Tensor | None, ratio: int,
    topk_idx: Tensor | None, softmax_scale: float, round_probs: bool = False,
) -> Tensor:  # fmt: skip
    """o[b,t,h] = sum_j e^(l_j - M) k_j / (sum_j e^(l_j - M) + e^(sink_h - M)), l = q·k * scale.

    q [B, T, H, d], kv [B, T, d], positions [B, T], sink [H] (raw logit, not scaled),
    slots [B] (the cache row of each step row), window_cache [N, W, d] (ring buffers, rows
    `slots` mutated: this step's kv is written after attending), compressed [N, C, d] or None
    (ratio 0), topk_idx [B, T, K] with -1 = none (CSA only).
    M is the max over real keys only (L keys: ring, step, entries). Returns [B, T, H, d] in
    q's dtype.

    `round_probs` (numerics: official, V4_REFERENCE §8.2, §12.1): the official kernel casts
    the unnormalised probabilities e^(l_j - M) to bf16 (q's dtype) for the P·V product and
    divides the fp32 result by the fp32 denominator (summed before the cast). Its M is the
    running max of 64-key blocks, so where a later block raises the max the official value
    differs from this one by bf16 noise; with the max in the first block they are the same.
    """
    window_keys, visible = _window_keys(kv, positions, window_cache[slots])
    qf = q.float()
    logits = (qf[:, :, :, None] * window_keys[:, :, None]).sum(-1)  # [B, T, H, W]
    masks, compressed_keys = [visible[:, :, None].expand_as(logits)], None
    if ratio and compressed is not None:
        compressed_keys = compressed[slots].float()  # [B, C, d]
        logits = torch.cat((logits, bmm(qf, compressed_keys)), dim=-1)  # [B, T, H, W + C]
        mask = _compressed_mask(positions, compressed.shape[1], ratio, topk_idx)  # [B, T, C]
        masks.append(mask[:, :, None].expand(-1, -1, q.shape[2], -1))
    logits = (logits * softmax_scale).masked_fill(~torch.cat(masks, dim=-1), float("-inf"))
    top = logits.amax(dim=-1, keepdim=True)  # [B, T, H, 1], finite: the query sees itself
    weights = (logits - top).exp()
    denom = weights.sum(-1, keepdim=True) + (sink.float()[:, None] - top).exp()
    probs = round_to(weights, q.dtype) if round_probs else weights / denom
    out = _weighted_keys(probs, window_keys, compressed_keys)
    if round_probs:  # official: P in bf16 for P·V, then the division in fp32
        out = out / denom
    _write_window(window_cache, slots, kv, positions)
    return out.to(q.dtype)


def _weighted_keys(probs: Tensor, window_keys: Tensor, compressed_keys: Tensor | None) -> Tensor:
    """P·V over the window's slots (summed in slot order), plus the compressed entries' part
    (an invariant product over the C cache entries): [B, T, H, W (+ C)] -> [B, T, H, d]."""
    window = window_keys.shape[2]
    out = (probs[..., :window, None] * window_keys[:, :, None]).sum(-2)
    if compressed_keys is None:
        return out
    return out + bmm(probs[..., window:], compressed_keys.transpose(1, 2))


def _write_window(window_cache: Tensor, slots: Tensor, kv: Tensor, positions: Tensor) -> None:
    """Store this step's last min(T, W) tokens of row b at ring slot position % W of cache row
    slots[b] (an indexed assignment: no other row is touched)."""
    window = window_cache.shape[1]
    last = slice(max(0, kv.shape[1] - window), kv.shape[1])
    ring = positions[:, last] % window  # [B, T']
    window_cache[slots[:, None], ring] = kv[:, last].to(window_cache.dtype)


def grouped_linear(o: Tensor, wo_a: Tensor, groups: int) -> Tensor:
    """Block-diagonal projection of contiguous head groups: [B, T, H, d] -> [B, T, G*R].

    Group g (heads g*H/G .. (g+1)*H/G - 1, flattened head-major) is multiplied by rows
    g*R .. (g+1)*R - 1 of wo_a [G*R, H*d/G]. Returns o's dtype."""
    grouped = o.float().flatten(2).unflatten(-1, (groups, -1))  # [B, T, G, H*d/G]
    weight = wo_a.float().unflatten(0, (groups, -1))  # [G, R, H*d/G]
    out = torch.stack([matmul(grouped[:, :, g], weight[g]) for g in range(groups)], dim=2)
    return out.flatten(2).to(o.dtype)  # [B, T, G, R] -> [B, T, G*R]
