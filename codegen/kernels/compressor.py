"""The KV compressor's pieces (V4_REFERENCE §6) on one row's timeline of raw (K, Z + ape).

A row's timeline is the carried state followed by this step's tokens: a position p before the
step's first position `start` lives in the state's ring slot p % (coff*m) (positions before 0
are empty), a position in [start, end) is token p - start of the step (its gate gets
ape[p % m] here), and a later one is empty (0, -inf).
Reading slots through positions lets one formula serve pooling (any entry a step completes)
and the state update (the tail of the timeline), from any start and for any step length.
"""

import triton
import triton.language as tl


@triton.jit
def timeline(
    k_ptr,
    z_ptr,
    ape_ptr,
    skv_ptr,
    ssc_ptr,
    skv_slot,
    ssc_slot,
    p,
    col,
    ok,
    start,
    end,
    W: tl.constexpr,
    M: tl.constexpr,
    SLOTS: tl.constexpr,
):
    """(kv, score) [S, N] fp32 of positions p [S] at feature columns col ([S, N] or [1, N]).

    k/z: this row's step projections [T, W] fp32; skv/ssc: this row's state slots, slot
    strides skv_slot/ssc_slot; ok [S, N]: lanes that exist (others read as (0, -inf))."""
    t = p - start
    step = ok & ((p >= start) & (p < end))[:, None]
    at = t[:, None] * W + col
    kv = tl.load(k_ptr + at, mask=step, other=0.0)
    gate = tl.load(z_ptr + at, mask=step, other=0.0)
    gate += tl.load(ape_ptr + (p % M)[:, None] * W + col, mask=step, other=0.0).to(tl.float32)
    held = ok & ((p < start) & (p >= 0))[:, None]
    slot = (p % SLOTS)[:, None]
    kv = tl.where(held, tl.load(skv_ptr + slot * skv_slot + col, mask=held, other=0.0), kv)
    old = tl.load(ssc_ptr + slot * ssc_slot + col, mask=held, other=float("-inf"))
    return kv, tl.where(step, gate, old)


@triton.jit
def pool_part(
    k_ptr,
    z_ptr,
    ape_ptr,
    skv_ptr,
    ssc_ptr,
    skv_slot,
    ssc_slot,
    first,
    lo,
    hi,
    start,
    end,
    ch,
    ch_ok,
    C: tl.constexpr,
    W: tl.constexpr,
    M: tl.constexpr,
    SLOTS: tl.constexpr,
    OVERLAP: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """One part of the per-channel softmax-gated sum over the slots of the entry whose slot 0
    is position `first`: slots [lo, hi), channels ch [N] (ch_ok: real ones), an online
    softmax over slot tiles of BLOCK_S. With OVERLAP, slots [0, M) read the "a" half
    (columns ch), the rest the "b" half (columns C + ch). Returns (max, den, acc) [N] fp32:
    the part's gate maximum (-inf where all its slots are empty), sum of e^(gate - max) and
    sum of e^(gate - max) kv; `merge_parts` combines the parts of an entry."""
    mx = tl.full(ch.shape, float("-inf"), tl.float32)
    den = tl.zeros(ch.shape, tl.float32)
    acc = tl.zeros(ch.shape, tl.float32)
    for s0 in range(lo, hi, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        col = ch[None, :]
        if OVERLAP:
            col += (s >= M).to(tl.int32)[:, None] * C
        ok = (s < hi)[:, None] & ch_ok[None, :]
        kv, gate = timeline(
            k_ptr,
            z_ptr,
            ape_ptr,
            skv_ptr,
            ssc_ptr,
            skv_slot,
            ssc_slot,
            first + s,
            col,
            ok,
            start,
            end,
            W,
            M,
            SLOTS,
        )
        top = tl.maximum(mx, tl.max(gate, axis=0))
        ref = tl.where(top == float("-inf"), 0.0, top)  # an all-empty prefix adds nothing
        alpha = tl.exp(mx - ref)
        e = tl.exp(gate - ref[None, :])
        den = den * alpha + tl.sum(e, axis=0)
        acc = acc * alpha + tl.sum(e * kv, axis=0)
        mx = top
    return mx, den, acc


@triton.jit
def merge_parts(part_ptr, ch, ch_ok, C: tl.constexpr, PARTS: tl.constexpr):
    """The pooled entry at channels ch [N] from its PARTS parts' (max, den, acc), stored at
    part_ptr as [PARTS, 3, C] fp32, combined in part order (a fixed order: the entry's value
    never depends on the batch). Returns [N] fp32, 0 on padding channels."""
    mx = tl.full(ch.shape, float("-inf"), tl.float32)
    for i in range(PARTS):
        mx = tl.maximum(mx, tl.load(part_ptr + i * 3 * C + ch, mask=ch_ok, other=float("-inf")))
    ref = tl.where(mx == float("-inf"), 0.0, mx)
    den = tl.zeros(ch.shape, tl.float32)
    acc = tl.zeros(ch.shape, tl.float32)
    for i in range(PARTS):
        at = part_ptr + i * 3 * C + ch
        alpha = tl.exp(tl.load(at, mask=ch_ok, other=float("-inf")) - ref)
        den += alpha * tl.load(at + C, mask=ch_ok, other=0.0)
        acc += alpha * tl.load(at + 2 * C, mask=ch_ok, other=0.0)
    return tl.where(den > 0, acc / tl.where(den > 0, den, 1.0), 0.0)
