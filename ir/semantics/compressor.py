"""The KV compressor (V4_REFERENCE.md §6): gated pooling of every m tokens into one entry.

One function serves the main compressor (c = head_dim) and the indexer's (c = index head_dim),
for HCA (coff = 1, one window per entry) and CSA (ratio 4, coff = 2: entry w pools the "a" half
of window w-1 with the "b" half of window w). It runs from any start position and any number of
tokens, so prefill, chunked prefill and decode are one code path: each row's tokens are laid on
a timeline that begins with the carried state, every completed entry is pooled from it, and the
tail of the timeline becomes the new state.

State layout (the official decode state, §6.5), per row, fp32, coff*m slots of coff*c features:
- slots [(coff-1)*m, coff*m): the current (incomplete) window; the token at position p sits in
  slot (coff-1)*m + p % m as raw (K_p, Z_p + ape[p % m]); slots of positions not yet seen hold
  (0, -inf) (the official code leaves stale values there; they are never read).
- overlap only, slots [0, m): the previous complete window's raw (K, Z + ape), (0, -inf) before
  the first window completes.
The caller initialises state_kv to 0 and state_score to -inf.
"""

from __future__ import annotations

import torch
from torch import Tensor

from v4c.ir.semantics.norm import rms_norm
from v4c.ir.semantics.rope import apply_rope
from v4c.spec.schema import coff


def _timeline(
    state_kv: Tensor, state_score: Tensor, k: Tensor, z: Tensor, start: int, m: int
) -> tuple[Tensor, Tensor, int]:
    """One row's raw (K, Z) from the state's first slot to the end of the window of the next
    position, padded with (0, -inf); returns (kv, score, n_filled), each [L, coff*c], L % m == 0."""
    carried = state_kv.shape[0] - m + start % m  # valid state slots before this step's tokens
    n_filled = carried + k.shape[0]
    length = (n_filled // m + 1) * m
    kv = k.new_zeros(length, k.shape[1])
    score = k.new_full((length, k.shape[1]), float("-inf"))
    kv[:carried], score[:carried] = state_kv[:carried], state_score[:carried]
    kv[carried:n_filled], score[carried:n_filled] = k, z
    return kv, score, n_filled


def _pool(kv: Tensor, score: Tensor, n_windows: int, m: int, overlap: bool) -> Tensor:
    """Softmax-gated pooling (per channel, over slots) of the timeline's complete windows.

    Returns [n_windows - coff + 1, c]: one entry per window that closes an entry."""
    width = kv.shape[-1]
    kv = kv[: n_windows * m].view(n_windows, m, width)  # [n_win, m, coff*c]
    score = score[: n_windows * m].view(n_windows, m, width)
    if overlap:
        c = width // 2
        kv = torch.cat((kv[:-1, :, :c], kv[1:, :, c:]), dim=1)  # [n_win-1, 2m, c]
        score = torch.cat((score[:-1, :, :c], score[1:, :, c:]), dim=1)
    return (kv * score.softmax(dim=1)).sum(dim=1)


def compress(
    x: Tensor, positions: Tensor, wkv: Tensor, wgate: Tensor, ape: Tensor, norm_weight: Tensor,
    *, ratio: int, rope_freqs: Tensor, rope_dim: int, eps: float,
    state_kv: Tensor, state_score: Tensor, cache: Tensor,
) -> None:  # fmt: skip
    """Append every entry completed by this step's tokens to `cache` and advance the state.

    x [B, T, D], positions [B, T], wkv / wgate [coff*c, D], ape [m, coff*c], norm_weight [c],
    state_kv / state_score [B, coff*m, coff*c] fp32 (mutated, layout in the module docstring),
    cache [B, C, c] (mutated): entry w, written once token (w+1)*m - 1 is processed, is
    RMSNorm(pooled, norm_weight) with RoPE at position w*m on its last rope_dim channels.
    """
    if 2 * rope_freqs.numel() != rope_dim:
        raise ValueError(f"rope_freqs has {rope_freqs.numel()} pairs, rope_dim is {rope_dim}")
    m, f = ratio, coff(ratio)  # f: the windows one entry pools
    k = x.float() @ wkv.float().T  # [B, T, coff*c]
    z = x.float() @ wgate.float().T + ape.float()[positions % m]  # [B, T, coff*c]
    for b in range(x.shape[0]):
        start = int(positions[b, 0])
        kv, score, n_filled = _timeline(state_kv[b], state_score[b], k[b], z[b], start, m)
        entries = _pool(kv, score, n_filled // m, m, overlap=f == 2)  # [n, c]
        _store(entries, start // m, cache[b], norm_weight, m, rope_freqs, eps)
        tail = kv.shape[0] - f * m
        state_kv[b], state_score[b] = kv[tail:], score[tail:]


def _store(
    entries: Tensor,
    first: int,
    cache: Tensor,
    norm_weight: Tensor,
    m: int,
    freqs: Tensor,
    eps: float,
) -> None:
    """Post-process entries first, first+1, ... (§6.3 steps 1-2) and write them to one row's cache.

    The pooled value is rounded to the cache dtype before the norm, as the official code rounds
    it to the activation dtype there."""
    n = entries.shape[0]
    if n == 0:
        return
    normed = rms_norm(entries.to(cache.dtype), norm_weight, eps)  # [n, c]
    pos = (first + torch.arange(n, device=entries.device)) * m
    cache[first : first + n] = apply_rope(normed[None], pos[None], freqs)[0]
