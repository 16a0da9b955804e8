"""The KV compressor (V4_REFERENCE.md §6): gated pooling of every m tokens into one entry.

One function serves the main compressor (c = head_dim) and the indexer's (c = index head_dim),
for HCA (coff = 1, one window per entry) and CSA (ratio 4, coff = 2: entry w pools the "a" half
of window w-1 with the "b" half of window w). It runs from any start position and any number of
tokens, so prefill, chunked prefill and decode are one code path: each row's tokens are laid on
a timeline that begins with the carried state, every completed entry is pooled from it, and the
step's tokens are written to the state's ring.

State layout, per row, fp32, coff*m slots of coff*c features: a ring of the last coff*m
positions' raw (K_p, Z_p + ape[p % m]), position p in slot p % (coff*m) (so, overlapping, the
current window and the previous one are the ring's two halves). The official decode state
(§6.5) shifts the current window down when it completes; a ring never moves a value, so every
cache a token writes (this state, the sliding window, the compressed entries) is a slot indexed
by its position alone, and speculative decoding undoes a rejected token by restoring the slots
its position maps to (`runtime/rollback.py`). Slots of positions not yet seen in the current
window hold the value of the position coff*m earlier, or the initial fill; they are never read
(a window is pooled once all its positions are written; positions before 0 read as (0, -inf)).
The caller initialises state_kv to 0 and state_score to -inf. State and cache hold N
sequences; step row b reads and writes row slots[b] of each, in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from v4c.ir.semantics.invariant import matmul
from v4c.ir.semantics.norm import rms_norm
from v4c.ir.semantics.quant import fp4_sim, fp8_sim, hadamard
from v4c.ir.semantics.rope import apply_rope
from v4c.spec.schema import coff


def _timeline(
    state_kv: Tensor, state_score: Tensor, k: Tensor, z: Tensor, start: int, m: int
) -> tuple[Tensor, Tensor, int]:
    """One row's raw (K, Z) from the first position of the window coff - 1 windows before
    `start`'s to the end of the window of the next position, padded with (0, -inf); returns
    (kv, score, n_filled), each [L, coff*c], L % m == 0."""
    slots = state_kv.shape[0]
    base = (start // m + 1) * m - slots  # the timeline's first position
    carried = start - base  # positions read from the ring, before this step's tokens
    n_filled = carried + k.shape[0]
    length = (n_filled // m + 1) * m
    kv = k.new_zeros(length, k.shape[1])
    score = k.new_full((length, k.shape[1]), float("-inf"))
    held = torch.arange(max(base, 0), start, device=k.device)  # positions before 0 stay empty
    kv[held - base], score[held - base] = state_kv[held % slots], state_score[held % slots]
    kv[carried:n_filled], score[carried:n_filled] = k, z
    return kv, score, n_filled


def _write_ring(state: Tensor, values: Tensor, positions: Tensor) -> None:
    """Store one row's last min(T, slots) step values at ring slots position % slots."""
    slots = state.shape[0]
    last = slice(max(0, values.shape[0] - slots), values.shape[0])
    state[positions[last] % slots] = values[last]


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
    k = matmul(x.float(), wkv.float())  # [B, T, coff*c]
    z = matmul(x.float(), wgate.float())  # [B, T, coff*c]
    compress_projected(
        k, z, positions, ape, norm_weight, ratio=ratio, rope_freqs=rope_freqs,
        rope_dim=rope_dim, eps=eps, slots=slots, state_kv=state_kv, state_score=state_score,
        cache=cache, sim=sim,
    )  # fmt: skip


def compress_projected(
    k: Tensor, z: Tensor, positions: Tensor, ape: Tensor, norm_weight: Tensor,
    *, ratio: int, rope_freqs: Tensor, rope_dim: int, eps: float,
    slots: Tensor, state_kv: Tensor, state_score: Tensor, cache: Tensor, sim: str = "none",
) -> None:  # fmt: skip
    """`compress` from the projections: k = x wkvᵀ and z = x wgateᵀ [B, T, coff*c] fp32 (the
    plan computes them as linears); ape is added to z here."""
    if 2 * rope_freqs.numel() != rope_dim:
        raise ValueError(f"rope_freqs has {rope_freqs.numel()} pairs, rope_dim is {rope_dim}")
    m, f = ratio, coff(ratio)  # f: the windows one entry pools
    k, z = k.float(), z.float() + ape.float()[positions % m]
    finish = Finish(norm_weight, m, rope_freqs, eps, rope_dim, sim)
    if k.shape[1] == 1:
        _decode(k[:, 0], z[:, 0], positions[:, 0], slots, state_kv, state_score, cache, finish)
        return
    for b in range(k.shape[0]):
        start, row = int(positions[b, 0]), int(slots[b])
        kv, score, n_filled = _timeline(state_kv[row], state_score[row], k[b], z[b], start, m)
        entries = _pool(kv, score, n_filled // m, m, overlap=f == 2)  # [n, c]
        _store(entries, start // m, cache[row], finish)
        _write_ring(state_kv[row], k[b], positions[b])
        _write_ring(state_score[row], z[b], positions[b])


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
    takes its ring slot; when it closes a window the entry is pooled from the ring (read in
    position order, positions after p or before 0 as (0, -inf), as the timeline pads them)
    and written where `complete`. Writes are selections, so no value is read on the host."""
    m = finish.m
    length, width = state_kv.shape[1:]  # coff*m, coff*c
    coff = length // m
    state_kv[slots, p % length] = k
    state_score[slots, p % length] = z
    # the ring in position order, from the first position of the entry p's window closes
    order = (p // m + 1)[:, None] * m - length + torch.arange(length, device=p.device)  # [B, L]
    ring = (order % length)[..., None].expand(-1, -1, width)
    empty = ((order < 0) | (order > p[:, None]))[..., None]
    kv = torch.where(empty, 0.0, state_kv[slots].gather(1, ring))  # [B, L, W]
    score = torch.where(empty, float("-inf"), state_score[slots].gather(1, ring))
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
