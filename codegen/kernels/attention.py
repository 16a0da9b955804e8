"""Sparse attention pieces (V4_REFERENCE §5, §8): the keys one query attends to, an online
softmax with a sink over them, its flash-decoding split into slices, and the grouped output
projection's tile.

The keys of the query at position `pos` (token t of a step row whose first position is
`start`) form one virtual list of L = W + C entries, numbered v:
- v < W: the window position p = pos - W + 1 + v (none if p < 0), read from the ring buffer
  (slot p % W) when an earlier step wrote it (p < start), else from this step's kv (token
  t - (pos - p));
- v >= W: compressed entry c = v - W: CSA the indexer's pick idx[c] (-1: none), HCA entry c
  itself while c < (pos + 1) // RATIO; none without compression (C = 0).
Masked lanes are loaded as 0 and their logits set to -inf.

The softmax state of a block of heads is (m, l, acc): running max [BH], running sum [BH] and
unnormalised output [BH, BD], all fp32. m starts at a finite floor rather than -inf, so a
block whose keys are all masked leaves the state as it is (no -inf - -inf); every query sees
at least itself, so the final m is a real logit and the sink is measured against it.
Keys are values (one shared kv head): a gathered tile [BN, BD] feeds both products.

Products take their operands as `dot_operand` gives them (kernels/dots.py): bf16 when every
operand came from bf16 (PRECISION "tf32"; the probabilities are rounded to bf16 for p·v, as
the official kernels do), fp32 with "ieee" when one is fp32. Under the interpreter (UPCAST)
every operand is fp32 and "tf32" products are exact for bf16 inputs (q·k matches the fp32
reference; the probabilities round to TF32). ROUND_P (numerics: official, bf16) rounds the
probabilities to bf16 explicitly, on the interpreter too; their max is the block's (tiles:
the running max, as the official kernel; split: the slice's), the reference's the query's,
so the two differ by bf16 noise where a later block raises the max (ir/semantics/attention).
"""

import triton
import triton.language as tl

from v4c.codegen.kernels.dots import dot_operand, round_bf16
from v4c.codegen.kernels.head_rope import normed_q

FLOOR = tl.constexpr(-1.0e30)  # the running max of a state that has seen no key


@triton.jit
def key_rows(
    v,
    pos,
    start,
    t,
    step_ptr,
    ring_ptr,
    ring_stride,
    comp_ptr,
    comp_stride,
    n_entries,
    idx_ptr,
    W: tl.constexpr,
    D: tl.constexpr,
    RATIO: tl.constexpr,
    TOPK: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """(row pointers [BN], valid [BN]) of virtual keys v [BN] (the list of the module doc):
    step_ptr is the step row's kv, ring_ptr its ring, comp_ptr its compressed entries and
    idx_ptr its TOPK picks (TOPK > 0: CSA). ALIGNED: every row the pointers can take starts
    on a 16-byte boundary (Triton cannot see it through the selects between the sources)."""
    p = pos - (W - 1) + v  # the window position of v < W
    back = tl.maximum(p, 0)
    in_ring = ring_ptr + (back % W).to(tl.int64) * ring_stride
    in_step = step_ptr + (t - (pos - back)).to(tl.int64) * D
    ptrs = tl.where(back < start, in_ring, in_step)
    valid = (v < W) & (p >= 0)
    if RATIO > 0:
        c = v - W
        if TOPK > 0:
            w = tl.load(idx_ptr + c, mask=(c >= 0) & (c < TOPK), other=-1)
            seen = (w >= 0) & (w < n_entries)
        else:
            w = c
            seen = (c >= 0) & (c < tl.minimum((pos + 1) // RATIO, n_entries))
        entry = comp_ptr + tl.maximum(w, 0).to(tl.int64) * comp_stride
        ptrs = tl.where(v < W, ptrs, entry)
        valid = valid | seen
    if ALIGNED:  # every row starts on 16 bytes (the caller checked): 16-byte vector loads
        ptrs = tl.multiple_of(ptrs, 16)
    return ptrs, valid


@triton.jit
def init_state(BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """Empty softmax state: (m [BH], l [BH], acc [BH, BD])."""
    m = tl.full([BLOCK_H], FLOOR, tl.float32)
    l = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    return m, l, acc


@triton.jit
def fold_rows(
    q,
    row_ptrs,
    valid,
    m,
    l,
    acc,
    scale,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    ROUND_P: tl.constexpr,
):
    """Fold key rows starting at `row_ptrs` [BN] (masked by `valid` [BN]) into the state of
    q [BH, BD] (a dot operand already): logits q·k * scale, softmax-weighted sum of the same
    rows."""
    cols = tl.arange(0, BLOCK_D)
    k = tl.load(row_ptrs[:, None] + cols[None, :], mask=_cols(valid, cols, D, BLOCK_D), other=0.0)
    k = dot_operand(k, UPCAST, PRECISION)  # [BN, BD]
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # [BH, BN]
    s = tl.where(valid[None, :], s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, axis=1))
    alpha = tl.exp(m - m_new)
    p = tl.exp(s - m_new[:, None])
    l = l * alpha + tl.sum(p, axis=1)
    if ROUND_P:  # official: P in bf16 for P·V (the sum above is fp32)
        p = round_bf16(p)
    acc = acc * alpha[:, None] + tl.dot(
        dot_operand(p, UPCAST, PRECISION), k, input_precision=PRECISION
    )
    return m_new, l, acc


@triton.jit
def finish(m, l, acc, sink):
    """o = acc / (l + e^(sink - m)): the sink [BH] (raw logit) only enlarges the denominator."""
    return acc / (l + tl.exp(sink - m))[:, None]


@triton.jit
def slice_partial(
    q_ptr,
    h,
    ptrs,
    valid,
    scale,
    part_ptr,
    ml_ptr,
    r,
    cos,
    sin,
    on,
    HEADS: tl.constexpr,
    D: tl.constexpr,
    SLICES: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    ROUND_P: tl.constexpr,
    Q_NORM: tl.constexpr,
    ROPE_AT: tl.constexpr,
    INLINE: tl.constexpr,
):
    """Flash-decoding: the softmax partial of heads h [BH] of one query (q_ptr: [HEADS, D])
    over one slice of its keys (rows at `ptrs` [BN], masked by `valid`), in one block: m [BH]
    the slice's max logit (FLOOR if it has no key), l = Σ e^(ℓ - m), o [BH, D] = Σ e^(ℓ - m) k.
    o goes to part_ptr [HEADS, D], (m, l) to ml_ptr [2, HEADS, SLICES] (at this slice: a
    head's SLICES maxima, then sums, lie side by side for `combine_slices`). The heads are
    the dots' M (a block of the heads that share the single kv head), D is walked in BLOCK_D
    chunks, twice (q·k, then p·k), so only a [BH, BD] tile of o is live at a time.
    Q_NORM: each q chunk is normalised by its heads' scales r [BH], and the chunk at column
    ROPE_AT (which holds every RoPE channel) rotated by the angles (cos, sin, on) of its
    columns (kernels/head_rope.py `normed_q`)."""
    heads = h < HEADS
    s = tl.zeros([h.shape[0], BLOCK_N], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        q = tl.load(q_ptr + h[:, None] * D + cols[None, :], mask=_cols(heads, cols, D, BLOCK_D),
                    other=0.0)  # fmt: skip
        if Q_NORM:
            q = q.to(tl.float32)  # one type on both sides of the branch
            if d0 == ROPE_AT:
                q = normed_q(q, r, cos, sin, on, BLOCK_D, True, INLINE, q_ptr.dtype.element_ty)
            else:
                q = normed_q(q, r, cos, sin, on, BLOCK_D, False, INLINE, q_ptr.dtype.element_ty)
        k = tl.load(ptrs[:, None] + cols[None, :], mask=_cols(valid, cols, D, BLOCK_D), other=0.0)
        q = dot_operand(q, UPCAST, PRECISION)
        k = dot_operand(k, UPCAST, PRECISION)
        s = tl.dot(q, tl.trans(k), s, input_precision=PRECISION)  # [BH, BN]
    s = tl.where(valid[None, :], s * scale, float("-inf"))
    m = tl.maximum(tl.max(s, axis=1), FLOOR)
    p = tl.exp(s - m[:, None])
    l = tl.sum(p, axis=1)
    if ROUND_P:  # official: P in bf16 for P·V (the sum above is fp32)
        p = round_bf16(p)
    p = dot_operand(p, UPCAST, PRECISION)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        k = tl.load(ptrs[:, None] + cols[None, :], mask=_cols(valid, cols, D, BLOCK_D), other=0.0)
        o = tl.dot(p, dot_operand(k, UPCAST, PRECISION), input_precision=PRECISION)
        tl.store(part_ptr + h[:, None] * D + cols[None, :], o, mask=_cols(heads, cols, D, BLOCK_D))
    tl.store(ml_ptr + h * SLICES, m, mask=heads)
    tl.store(ml_ptr + (HEADS + h) * SLICES, l, mask=heads)


@triton.jit
def _cols(rows, cols, D: tl.constexpr, BLOCK_D: tl.constexpr):
    """The mask [R, BD] of a tile's rows `rows` [R] and columns `cols` [BD] < D: the rows'
    alone, broadcast, when the chunks tile D exactly (a mask constant along a row lets the
    loads be 16-byte vectors)."""
    if D % BLOCK_D == 0:
        return tl.broadcast_to(rows[:, None], (rows.shape[0], BLOCK_D))
    return rows[:, None] & (cols[None, :] < D)


@triton.jit
def combine_slices(part_ptr, ml_ptr, sink, h, cols, HEADS: tl.constexpr, D: tl.constexpr,
                   SLICES: tl.constexpr, BLOCK_S: tl.constexpr, CHUNK: tl.constexpr):  # fmt: skip
    """The output tile [BH, BD] (heads h, columns cols) of one query from its SLICES
    partials (part_ptr [SLICES, HEADS, D], ml_ptr [2, HEADS, SLICES]; BLOCK_S >= SLICES):
    M = max_s m_s, then l = Σ_s l_s e^(m_s - M) and o = Σ_s o_s e^(m_s - M), the latter in
    CHUNK slices at a time, always in the same order, so a query's result depends on its own
    keys only, never on the other queries of the call; o / (l + e^(sink - M)) as `finish`.
    A missing slice or head reads as m = FLOOR, l = o = 0 (weight e^(FLOOR - M) = 0)."""
    heads = h < HEADS
    s = tl.arange(0, BLOCK_S)
    at = h[:, None] * SLICES + s[None, :]
    live = heads[:, None] & (s < SLICES)[None, :]
    m = tl.load(ml_ptr + at, mask=live, other=FLOOR)  # [BH, BS]
    top = tl.max(m, axis=1)
    sums = tl.load(ml_ptr + HEADS * SLICES + at, mask=live, other=0.0)
    l = tl.sum(sums * tl.exp(m - top[:, None]), axis=1)
    acc = tl.zeros([h.shape[0], cols.shape[0]], tl.float32)
    for s0 in range(0, SLICES, CHUNK):
        c = s0 + tl.arange(0, CHUNK)
        ok = heads[:, None] & (c < SLICES)[None, :]  # [BH, CHUNK]
        a = tl.exp(tl.load(ml_ptr + h[:, None] * SLICES + c[None, :], mask=ok, other=FLOOR) -
                   top[:, None])  # fmt: skip
        tile = part_ptr + (c[None, :, None] * HEADS + h[:, None, None]) * D + cols[None, None, :]
        o = tl.load(tile, mask=ok[:, :, None] & (cols < D)[None, None, :], other=0.0)
        acc += tl.sum(o * a[:, :, None], axis=1)
    return finish(top, l, acc, sink)


@triton.jit
def write_ring(kv_ptr, pos_ptr, slots_ptr, ring_ptr, ring_sb, ring_sn, tok, T, cols,
               D: tl.constexpr, W: tl.constexpr):  # fmt: skip
    """Columns `cols` of token `tok`'s kv row (b * T + t) into its place in row b's ring: slot
    pos % W of cache row slots[b]."""
    b = tok // T
    at = tl.load(pos_ptr + tok) % W
    row = tl.load(kv_ptr + tok * D + cols, mask=cols < D)
    ring = ring_ptr + tl.load(slots_ptr + b) * ring_sb + at * ring_sn
    tl.store(ring + cols, row.to(ring_ptr.dtype.element_ty), mask=cols < D)
