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
The caller initialises state_kv to 0 and state_score to -inf. State and cache hold N
sequences; step row b reads and writes row slots[b] of each, in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from v4c.ir.semantics.norm import rms_norm
from v4c.ir.semantics.quant import fp4_sim, fp8_sim, hadamard
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
    slots: Tensor, state_kv: Tensor, state_score: Tensor, cache: Tensor, sim: str = "none",
) -> None:  # fmt: skip
    """Append every entry completed by this step's tokens to `cache` and advance the state.

    x [B, T, D], positions [B, T], wkv / wgate [coff*c, D], ape [m, coff*c], norm_weight [c],
    slots [B] (the cache row of each step row), state_kv / state_score [N, coff*m, coff*c] fp32
    (rows `slots` mutated, layout in the module docstring), cache [N, C, c] (rows `slots`
    mutated): entry w, written once token (w+1)*m - 1 is processed, is
    RMSNorm(pooled, norm_weight) with RoPE at position w*m on its last rope_dim channels,
    then (numerics official, `sim`) rounded as the official cache stores it (§6.3 step 3).

    A one-token step (decode) runs every row at once from tensors alone, so that nothing is
    read on the host (a CUDA graph can hold it); it computes what the timeline computes.
    """
    if 2 * rope_freqs.numel() != rope_dim:
        raise ValueError(f"rope_freqs has {rope_freqs.numel()} pairs, rope_dim is {rope_dim}")
    m, f = ratio, coff(ratio)  # f: the windows one entry pools
    k = x.float() @ wkv.float().T  # [B, T, coff*c]
    z = x.float() @ wgate.float().T + ape.float()[positions % m]  # [B, T, coff*c]
    finish = Finish(norm_weight, m, rope_freqs, eps, rope_dim, sim)
    if x.shape[1] == 1:
        _decode(k[:, 0], z[:, 0], positions[:, 0], slots, state_kv, state_score, cache, finish)
        return
    for b in range(x.shape[0]):
        start, row = int(positions[b, 0]), int(slots[b])
        kv, score, n_filled = _timeline(state_kv[row], state_score[row], k[b], z[b], start, m)
        entries = _pool(kv, score, n_filled // m, m, overlap=f == 2)  # [n, c]
        _store(entries, start // m, cache[row], finish)
        tail = kv.shape[0] - f * m
        state_kv[row], state_score[row] = kv[tail:], score[tail:]


class Finish:
    """Post-processing of pooled entries before they enter the cache (§6.3 steps 1-3): the
    pooled value rounded to the cache dtype (the official code rounds it to the activation
    dtype there), RMSNorm, RoPE at the entry's first position, and the official rounding
    of the stored entry under numerics official (`sim`: "fp8" on the non-RoPE dims, "fp4"
    after a Hadamard)."""

    def __init__(self, norm_weight, m, freqs, eps, rope_dim, sim):
        self.norm_weight, self.m, self.freqs, self.eps = norm_weight, m, freqs, eps
        self.rope_dim, self.sim = rope_dim, sim

    def __call__(self, entries: Tensor, index: Tensor, dtype: torch.dtype) -> Tensor:
        """entries [B, n, c] pooled, index [B, n] their entry numbers -> [B, n, c] in dtype."""
        normed = rms_norm(entries.to(dtype), self.norm_weight, self.eps)
        out = apply_rope(normed, index * self.m, self.freqs)
        return out if self.sim == "none" else round_entries(out, self.sim, self.rope_dim)


def round_entries(entries: Tensor, sim: str, rope_dim: int) -> Tensor:
    """The official rounding of new compressed entries [..., c] (numerics: official, §6.3
    step 3): "fp8" (main compressor) rounds the non-RoPE dims to FP8 in 64-wide blocks;
    "fp4" (the indexer's) Hadamard-rotates the entry and rounds it to FP4 in 32-wide blocks.
    The Hadamard writes the entries' dtype (official: bf16) before the FP4 rounding."""
    if sim == "fp8":
        nope = entries.shape[-1] - rope_dim
        head = fp8_sim(entries[..., :nope].float(), block=64).to(entries.dtype)
        return torch.cat((head, entries[..., nope:]), dim=-1)
    return fp4_sim(hadamard(entries), block=32).to(entries.dtype)  # official: bf16 Hadamard


def _store(entries: Tensor, first: int, cache: Tensor, finish: Finish) -> None:
    """Entries first, first+1, ... of one row, finished and written to its cache."""
    n = entries.shape[0]
    if n == 0:
        return
    index = first + torch.arange(n, device=entries.device)
    cache[first : first + n] = finish(entries[None], index[None], cache.dtype)[0]


def _decode(
    k: Tensor, z: Tensor, p: Tensor, slots: Tensor,
    state_kv: Tensor, state_score: Tensor, cache: Tensor, finish: Finish,
) -> None:  # fmt: skip
    """One token per row: k, z [B, coff*c] (z with ape), p [B] its positions. The token
    takes its slot of the state (later slots are cleared, as the timeline pads them); when
    it closes a window the entry is pooled, written where `complete`, and the state shifts
    by one window. Writes are selections, so no value is read on the host."""
    m = finish.m
    length, width = state_kv.shape[1:]  # coff*m, coff*c
    coff = length // m
    slot = (coff - 1) * m + p % m  # [B]
    order = torch.arange(length, device=p.device)[None, :]  # [1, coff*m]
    at, after = (order == slot[:, None])[..., None], (order > slot[:, None])[..., None]
    kv = torch.where(at, k[:, None], torch.where(after, 0.0, state_kv[slots]))  # [B, L, W]
    score = torch.where(at, z[:, None], torch.where(after, float("-inf"), state_score[slots]))
    windows_kv, windows_score = kv.unflatten(1, (coff, m)), score.unflatten(1, (coff, m))
    if coff == 2:  # entry w pools the "a" half of window w-1 with the "b" half of window w
        c = width // 2
        pool_kv = torch.cat((windows_kv[:, 0, :, :c], windows_kv[:, 1, :, c:]), dim=1)
        pool_score = torch.cat((windows_score[:, 0, :, :c], windows_score[:, 1, :, c:]), dim=1)
    else:
        pool_kv, pool_score = windows_kv[:, 0], windows_score[:, 0]
    entry = (pool_kv * pool_score.softmax(dim=1)).sum(dim=1)  # [B, c]
    complete = (p % m == m - 1)[:, None]  # [B, 1]
    if cache.shape[1]:  # (a cache shorter than one window never completes an entry)
        index = (p // m).clamp(max=cache.shape[1] - 1)  # an entry completes inside the cache
        new = finish(entry[:, None], index[:, None], cache.dtype)[:, 0]  # [B, c]
        cache[slots, index] = torch.where(complete, new, cache[slots, index])
    shifted_kv = torch.cat((kv[:, m:], torch.zeros_like(kv[:, :m])), dim=1)
    shifted_score = torch.cat((score[:, m:], torch.full_like(score[:, :m], float("-inf"))), dim=1)
    state_kv[slots] = torch.where(complete[..., None], shifted_kv, kv)
    state_score[slots] = torch.where(complete[..., None], shifted_score, score)
