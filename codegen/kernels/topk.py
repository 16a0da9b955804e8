"""Exact top-k of a row of fp32 scores by radix select, ties to the lower index (the rule of
ir/semantics/indexer.py: a stable descending sort).

A score maps to an int32 key whose signed order is the scores' order (negative floats have
their magnitude bits flipped; -0.0 is made +0.0 first, as a float comparison ties them). The
k-th largest key T is found from the top bits down:
- the top 12 bits (sign, exponent, 3 mantissa bits): a 4096-bin histogram of the row, which
  the programs that compute the scores build as they write them (`count_bins`); the bin
  where the count from the top reaches k (`top_bin`) splits the row into keys above it
  (chosen), in it (candidates) and below;
- the row is cut into parts, one program each, that write in one pass (`compact`) the
  chosen ones' packed keys and the candidates (score and index) to the part's own regions,
  in index order, with their counts; the last program of a row to finish lays the parts'
  regions out back to back in part order (`flatten`), so both lists stay in index order;
- two 10-bit histogram passes over the candidates only (`narrow`) give T and how many keys
  equal to T are among the k; `chosen` picks the candidates above T and the lowest-indexed
  equal ones.
So a row is read once by the select, in parallel over its parts, plus O(k + candidates)
work in one program, whatever the scores, where a sort is O(n log² n).

The chosen entries are then ordered as the reference orders them (score descending, lower
index first) by sorting k packed int64 keys: the score key in the high 32 bits, 2^31 - 1 -
index in the low 31 (`pack`), so the signed order of the packed keys is the selection order.
EMPTY sorts below every packed key and unpacks to -1.
"""

import triton
import triton.language as tl

EMPTY = tl.constexpr(-9223372036854775808)  # int64 minimum
LOW = tl.constexpr(2147483647)  # 2^31 - 1: index bits mask and index complement
BINS = tl.constexpr(4096)  # the first level: the top 12 bits of a key
FIRST = tl.constexpr(20)  # the key's bits below the first level


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
def count_bins(hist_ptr, score, valid):
    """Add the first-level bins of scores [N] (masked by `valid`) to a row's histogram
    [BINS] in memory (zeroed before the first), one atomic increment a score: integer
    sums, so the counts do not depend on the programs' order."""
    bin = (score_key(score) >> FIRST) + BINS // 2
    tl.atomic_add(hist_ptr + bin, tl.full(bin.shape, 1, tl.int32), mask=valid)


@triton.jit
def top_bin(hist, k, N_BINS: tl.constexpr):
    """(bin, k'): the bin of a histogram [N_BINS] holding the k-th largest key (1 <= k <= its
    total) and that key's rank among the keys of the bin."""
    from_top = tl.cumsum(hist, 0, reverse=True)  # keys in this bin or above
    b = tl.arange(0, N_BINS)
    bin = tl.max(tl.where(from_top >= k, b, -1), axis=0)
    return bin, k - tl.sum(tl.where(b > bin, hist, 0), axis=0)


@triton.jit
def compact(row_ptr, lo, hi, prefix, out_ptr, cand_ptr, cand_idx_ptr, BLOCK: tl.constexpr):
    """One pass over the scores at row_ptr[lo:hi]: the packed keys of those whose top bits are
    above `prefix` go to out_ptr, those equal to it (the candidates: score, index) to
    cand_ptr and cand_idx_ptr, each list from its start, in index order. Returns how many
    went to each: (above, candidates)."""
    taken = 0
    kept = 0
    for i0 in range(lo, hi, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        live = i < hi
        score = tl.load(row_ptr + i, mask=live, other=0.0)
        top = score_key(score) >> FIRST
        pick = live & (top > prefix)
        keep = live & (top == prefix)
        at = taken + tl.cumsum(pick.to(tl.int32), 0) - pick.to(tl.int32)
        tl.store(out_ptr + at, pack(score_key(score), i, pick), mask=pick)
        to = kept + tl.cumsum(keep.to(tl.int32), 0) - keep.to(tl.int32)
        tl.store(cand_ptr + to, score, mask=keep)
        tl.store(cand_idx_ptr + to, i, mask=keep)
        taken += tl.sum(pick.to(tl.int32), axis=0)
        kept += tl.sum(keep.to(tl.int32), axis=0)
    return taken, kept


@triton.jit
def flatten(src_ptr, stride, counts, dst_ptr, FLAT: tl.constexpr):
    """Copy the first counts[p] items of each region p (at src_ptr + p * stride; counts
    [P]) to dst_ptr, back to back in region order, FLAT items a step (each item finds its
    region among the running ends). Returns how many were copied."""
    ends = tl.cumsum(counts, 0)
    starts = ends - counts
    regions = tl.arange(0, counts.shape[0])
    total = tl.sum(counts, axis=0)
    for j0 in range(0, total, FLAT):
        j = j0 + tl.arange(0, FLAT)
        p = tl.sum((j[:, None] >= ends[None, :]).to(tl.int32), axis=1)  # the region of item j
        first = tl.sum(tl.where(regions[None, :] == p[:, None], starts[None, :], 0), axis=1)
        live = j < total
        item = tl.load(src_ptr + p.to(tl.int64) * stride + (j - first), mask=live)
        tl.store(dst_ptr + j, item, mask=live)
    return total


@triton.jit
def narrow(row_ptr, n, prefix, k, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    """One 10-bit radix pass over n candidate scores at row_ptr: of the keys whose bits from
    SHIFT + 10 up are `prefix`, the bits SHIFT.. of the k-th largest. Returns (prefix extended
    by them, k among the keys that share it)."""
    hist = tl.zeros([1024], tl.int32)
    for i0 in range(0, n, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        key = score_key(tl.load(row_ptr + i, mask=i < n, other=0.0))
        live = (i < n) & ((key >> (SHIFT + 10)) == prefix)
        hist += tl.histogram((key >> SHIFT) & 1023, 1024, mask=live)
    bin, k = top_bin(hist, k, 1024)
    return (prefix << 10) | bin, k


@triton.jit
def chosen(row_ptr, idx_ptr, n, threshold, equal, out_ptr, BLOCK: tl.constexpr):
    """Store at out_ptr the packed keys of the candidates (n scores at row_ptr, their indices
    at idx_ptr, in index order) above `threshold` and the first `equal` equal to it."""
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
        index = tl.load(idx_ptr + i, mask=live, other=0)
        tl.store(out_ptr + at, pack(key, index, pick), mask=pick)
        taken += tl.sum(pick.to(tl.int32), axis=0)
        ties += tl.sum(tie.to(tl.int32), axis=0)
