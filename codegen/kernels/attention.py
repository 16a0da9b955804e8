"""Sparse attention pieces (V4_REFERENCE §5, §8): the keys one query attends to, and a
softmax with a sink over them, slice by slice.

The keys of the query at position `pos` (token t of a step row whose first position is
`start`) form one virtual list of L = W + C entries, numbered v:
- v < W: the window position p = pos - W + 1 + v (none if p < 0), read from the ring buffer
  (slot p % W) when an earlier step wrote it (p < start), else from this step's kv (token
  t - (pos - p));
- v >= W: compressed entry c = v - W: CSA the indexer's pick idx[c] (-1: none), HCA entry c
  itself while c < (pos + 1) // RATIO; none without compression (C = 0).
Masked lanes are loaded as 0 and their logits set to -inf.

A query's list is cut into slices of at most BLOCK_N keys, their number fixed by L alone
(codegen/ops/attention.py `slicing`). A slice's partial is its softmax against its own max:
(m, l, o), max [BH], sum [BH] and unnormalised output [BH, D], all fp32. The partials are
folded in slice order into the state (M, L, ACC), M starting at a finite floor rather than
-inf, so a slice whose keys are all masked leaves the state as it is (no -inf - -inf); every
query sees at least itself, so the final M is a real logit and the sink is measured against
it. A decode or verify step writes the partials of (token, slice) programs out and folds
them in `combine_slices`; a prefill program folds them as it makes them (`fold_slice` in
both): the same operations on the same values, so a token's output is the same bits in
every step. Keys are values (one shared kv head): a gathered tile [BN, BD] feeds both
products.

Products take their operands as `dot_operand` gives them (kernels/dots.py): bf16 when every
operand came from bf16 (PRECISION "tf32"; the probabilities are rounded to bf16 for p·v, as
the official kernels do), fp32 with "ieee" when one is fp32. Under the interpreter (UPCAST)
every operand is fp32 and "tf32" products are exact for bf16 inputs (q·k matches the fp32
reference; the probabilities round to TF32). ROUND_P (numerics: official, bf16) rounds the
probabilities to bf16 explicitly, on the interpreter too; their max is the slice's (the
official kernel's, its block's running max), the reference's the query's, so the two differ
by bf16 noise where a later slice raises the max (ir/semantics/attention).
"""

import triton
import triton.language as tl

from v4c.codegen.kernels.dots import dot_k16, dot_operand, round_bf16
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
def finish(m, l, acc, sink):
    """o = acc / (l + e^(sink - m)): the sink [BH] (raw logit) only enlarges the denominator."""
    return acc / (l + tl.exp(sink - m))[:, None]


@triton.jit
def slice_probs(
    q_ptr,
    h,
    ptrs,
    valid,
    scale,
    r,
    cos,
    sin,
    on,
    HEADS: tl.constexpr,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    ROUND_P: tl.constexpr,
    Q_NORM: tl.constexpr,
    ROPE_AT: tl.constexpr,
    INLINE: tl.constexpr,
):
    """The softmax of heads h [BH] of one query (q_ptr: [HEADS, D]) over one slice of its
    keys (rows at `ptrs` [BN], masked by `valid`), against the slice's own max: (m [BH] the
    max logit, FLOOR if the slice has no key; l [BH] = Σ e^(ℓ - m); p [BH, BN] = e^(ℓ - m)
    as a dot operand). The heads are the dots' M (a block of the heads that share the single
    kv head); q·k walks D in BLOCK_D chunks, so only a [BH, BD] tile of q is live at a time.
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
    return m, l, dot_operand(p, UPCAST, PRECISION)


@triton.jit
def slice_values(p, ptrs, valid, c0, D: tl.constexpr, BLOCK: tl.constexpr,
                 UPCAST: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """o [BH, BLOCK] = p · k on columns c0.. of the slice's key rows (p from `slice_probs`):
    one dot whose reduction is the slice's keys (`dot_k16`), so a column's sum is the same
    bits in a chunk of columns or in all of them."""
    cols = c0 + tl.arange(0, BLOCK)
    k = tl.load(ptrs[:, None] + cols[None, :], mask=_cols(valid, cols, D, BLOCK), other=0.0)
    o = tl.zeros([p.shape[0], BLOCK], tl.float32)
    return dot_k16(p, dot_operand(k, UPCAST, PRECISION), o, UPCAST, PRECISION)


@triton.jit
def store_partial(m, l, p, h, ptrs, valid, part_ptr, ml_ptr, HEADS: tl.constexpr,
                  D: tl.constexpr, SLICES: tl.constexpr, BLOCK_D: tl.constexpr,
                  UPCAST: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """Flash-decoding: one slice's partial (`slice_probs` of heads h) written out for
    `combine_slices`: o [BH, D] = p · k to part_ptr [HEADS, D], BLOCK_D columns at a time
    (only a [BH, BD] tile of o is live), (m, l) to ml_ptr [2, HEADS, SLICES] at this slice (a
    head's SLICES maxima, then sums, lie side by side)."""
    heads = h < HEADS
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        o = slice_values(p, ptrs, valid, d0, D, BLOCK_D, UPCAST, PRECISION)
        tl.store(part_ptr + h[:, None] * D + cols[None, :], o, mask=_cols(heads, cols, D, BLOCK_D))
    tl.store(ml_ptr + h * SLICES, m, mask=heads)
    tl.store(ml_ptr + (HEADS + h) * SLICES, l, mask=heads)


@triton.jit
def fold_slice(M, L, ACC, m, l, o):
    """The state (M [BH], L [BH], ACC [BH, BD]) of a query's slices so far, the next slice's
    partial (m, l, o) folded in: M' = max(M, m), L' = L e^(M - M') + l e^(m - M'), ACC' =
    ACC e^(M - M') + o e^(m - M'). The one fold of both forms (`combine_slices` with o read
    back, a prefill program with o in registers): elementwise, with explicit fmas (a
    compiler contracting a*b + c*d picks its own pair otherwise), so a column's value is the
    same bits in a tile of any width. A slice with no key (m = FLOOR, l = o = 0) leaves the
    state as it is."""
    top = tl.maximum(M, m)
    a = tl.exp(M - top)
    b = tl.exp(m - top)
    L = tl.fma(L, a, l * b)
    ACC = tl.fma(ACC, tl.broadcast_to(a[:, None], ACC.shape), o * b[:, None])
    return top, L, ACC


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
                   SLICES: tl.constexpr):  # fmt: skip
    """The output tile [BH, BD] (heads h, columns cols) of one query from its SLICES
    partials (part_ptr [SLICES, HEADS, D], ml_ptr [2, HEADS, SLICES]): `fold_slice` over the
    slices in order, then `finish`, so a query's result depends on its own keys only, and is
    what a prefill program folding the same slices in registers gets, bit for bit. A missing
    head reads as m = FLOOR, l = o = 0."""
    heads = h < HEADS
    M, L, ACC = init_state(h.shape[0], cols.shape[0])
    live = heads[:, None] & (cols < D)[None, :]
    for s in range(SLICES):
        m = tl.load(ml_ptr + h * SLICES + s, mask=heads, other=FLOOR)
        l = tl.load(ml_ptr + (HEADS + h) * SLICES + s, mask=heads, other=0.0)
        o = tl.load(part_ptr + (s * HEADS + h[:, None]) * D + cols[None, :], mask=live, other=0.0)
        M, L, ACC = fold_slice(M, L, ACC, m, l, o)
    return finish(M, L, ACC, sink)


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
