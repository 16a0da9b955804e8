"""Exact top-k of a row of fp32 scores by radix select, ties to the lower index (the rule of
ir/semantics/indexer.py: a stable descending sort).

A score maps to an int32 key whose signed order is the scores' order (negative floats have
their magnitude bits flipped; -0.0 is made +0.0 first, as a float comparison ties them). The
k-th largest key T is found a byte at a time, high byte first: a 256-bin histogram of the
next byte over the entries that share the bytes found so far, and the bin where the running
count from the top reaches k (`narrow`); four passes over the row, O(n) each. Every key above
T is chosen, and of those equal to T the lowest-indexed ones until k are (`chosen`, one more
pass in index order, carrying counts between chunks). Work is O(n) per row whatever the
scores, where a sort is O(n log² n).

The chosen entries are then ordered as the reference orders them (score descending, lower
index first) by sorting k packed int64 keys: the score key in the high 32 bits, 2^31 - 1 -
index in the low 31 (`pack`), so the signed order of the packed keys is the selection order.
EMPTY sorts below every packed key and unpacks to -1.
"""

import triton
import triton.language as tl

EMPTY = tl.constexpr(-9223372036854775808)  # int64 minimum
LOW = tl.constexpr(2147483647)  # 2^31 - 1: index bits mask and index complement


@triton.jit
def score_key(score):
    """[N] fp32 -> [N] int32 keys in the scores' order (equal floats, equal keys)."""
    score = tl.where(score == 0.0, 0.0, score)
    bits = score.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & LOW)


@triton.jit
def pack(key, index, valid):
    """[N] int32 score keys and indices (< 2^31) -> [N] int64 ordered keys, EMPTY where not
    valid."""
    packed = (key.to(tl.int64) << 32) | (-index.to(tl.int64) + LOW)
    return tl.where(valid, packed, EMPTY)


@triton.jit
def unpack(best):
    """[K] packed keys -> [K] int64 indices, -1 for EMPTY."""
    return tl.where(best == EMPTY, -1, -(best & LOW) + LOW)


@triton.jit
def narrow(row_ptr, n, prefix, k, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    """One radix pass over the n scores at row_ptr: of the keys whose bits above SHIFT + 8
    are `prefix` (every key when SHIFT is 24), the byte at SHIFT of the k-th largest, k >= 1.
    Returns (prefix extended by that byte, k among the keys that share it)."""
    hist = tl.zeros([256], tl.int32)
    for i0 in range(0, n, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        key = score_key(tl.load(row_ptr + i, mask=i < n, other=0.0))
        if SHIFT == 24:  # the top byte, signed: -128..127 -> bins 0..255
            live = i < n
            byte = (key >> 24) + 128
        else:
            live = (i < n) & ((key >> (SHIFT + 8)) == prefix)
            byte = (key >> SHIFT) & 255
        hist += tl.histogram(byte, 256, mask=live)
    from_top = tl.cumsum(hist, 0, reverse=True)  # keys in this bin or above
    bins = tl.arange(0, 256)
    bin = tl.max(tl.where(from_top >= k, bins, -1), axis=0)
    above = tl.sum(tl.where(bins > bin, hist, 0), axis=0)
    if SHIFT == 24:
        prefix = bin - 128
    else:
        prefix = (prefix << 8) | bin
    return prefix, k - above


@triton.jit
def kth_key(row_ptr, n, k, BLOCK: tl.constexpr):
    """(T, r): the k-th largest key of the n scores at row_ptr (1 <= k <= n) and how many of
    the keys equal to T are among the k largest."""
    prefix, k = narrow(row_ptr, n, 0, k, 24, BLOCK)
    prefix, k = narrow(row_ptr, n, prefix, k, 16, BLOCK)
    prefix, k = narrow(row_ptr, n, prefix, k, 8, BLOCK)
    return narrow(row_ptr, n, prefix, k, 0, BLOCK)


@triton.jit
def chosen(row_ptr, n, threshold, equal, out_ptr, BLOCK: tl.constexpr):
    """Store the packed keys of the chosen entries of the n scores at row_ptr (every key above
    `threshold`, the first `equal` keys equal to it in index order) at out_ptr, in index
    order; returns how many."""
    taken = 0
    ties = 0
    for i0 in range(0, n, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        live = i < n
        key = score_key(tl.load(row_ptr + i, mask=live, other=0.0))
        tie = live & (key == threshold)
        tie_rank = ties + tl.cumsum(tie.to(tl.int32), 0) - tie.to(tl.int32)
        pick = live & ((key > threshold) | (tie & (tie_rank < equal)))
        at = taken + tl.cumsum(pick.to(tl.int32), 0) - pick.to(tl.int32)
        tl.store(out_ptr + at, pack(key, i, pick), mask=pick)
        taken += tl.sum(pick.to(tl.int32), axis=0)
        ties += tl.sum(tie.to(tl.int32), axis=0)
    return taken
