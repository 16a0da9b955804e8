"""Exact streaming top-k over a row of fp32 scores, ties to the lower index.

Each candidate is packed into one int64 whose signed order is the selection order: the high
32 bits are the score's bits mapped to a monotone signed key (negative floats have their
magnitude bits flipped; -0.0 is made +0.0 first, as a float comparison ties them), the low 31
bits are 2^31 - 1 - index, so a lower index wins a tie. EMPTY sorts below every candidate and
unpacks to -1.

A row is consumed in chunks of the buffer's size K (a power of two): the buffer holds the best
K so far sorted descending; a chunk that has a candidate above the buffer's minimum is sorted
ascending, the two are combined with an elementwise max (the top K of the union, as a bitonic
sequence) and re-sorted. Work is O(n log² K) per row in registers, no scratch memory; chunks
that cannot enter the buffer cost one reduction. At V4-Flash scale (512 of up to 262144
entries) a row is 512 chunks of 512; once the buffer holds high scores most chunks are skipped,
the worst case (rising scores) sorts every chunk. A radix select (find the k-th key in a few
histogram passes, gather, sort once) bounds that to one sort, if profiling asks for it.
"""

import triton
import triton.language as tl

EMPTY = tl.constexpr(-9223372036854775808)  # int64 minimum
LOW = tl.constexpr(2147483647)  # 2^31 - 1: index bits mask and index complement


@triton.jit
def pack(score, index, valid):
    """[N] fp32 scores and int indices (< 2^31) -> [N] int64 ordered keys, EMPTY where not valid."""
    score = tl.where(score == 0.0, 0.0, score)
    bits = score.to(tl.int32, bitcast=True)
    key = bits ^ ((bits >> 31) & LOW)
    packed = (key.to(tl.int64) << 32) | (-index.to(tl.int64) + LOW)
    return tl.where(valid, packed, EMPTY)


@triton.jit
def merge(best, chunk):
    """best [K] sorted descending, chunk [K] any order -> the best K of both, sorted descending."""
    if tl.max(chunk, axis=0) > tl.min(best, axis=0):
        best = tl.sort(tl.maximum(best, tl.sort(chunk)), descending=True)
    return best


@triton.jit
def unpack(best):
    """[K] packed keys -> [K] int64 indices, -1 for EMPTY."""
    return tl.where(best == EMPTY, -1, -(best & LOW) + LOW)
