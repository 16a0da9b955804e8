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
):
    """(row pointers [BN], valid [BN]) of virtual keys v [BN] (the list of the module doc):
    step_ptr is the step row's kv, ring_ptr its ring, comp_ptr its compressed entries and
    idx_ptr its TOPK picks (TOPK > 0: CSA)."""
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
    live = valid[:, None] & (cols[None, :] < D)
    k = tl.load(row_ptrs[:, None] + cols[None, :], mask=live, other=0.0)
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
    ptrs,
    valid,
    scale,
    part_ptr,
    ml_ptr,
    HEADS: tl.constexpr,
    D: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    ROUND_P: tl.constexpr,
):
    """Flash-decoding: the softmax partial of every head of one query (q_ptr: [HEADS, D])
    over one slice of its keys (rows at `ptrs` [BN], masked by `valid`), in one block: m [H]
    the slice's max logit (FLOOR if it has no key), l = Σ e^(ℓ - m), o [H, D] = Σ e^(ℓ - m) k.
    o goes to part_ptr [HEADS, D], (m, l) to ml_ptr [2, HEADS]. The heads are the dots' M
    (all of them: the single kv head is shared), D is walked in BLOCK_D chunks, twice (q·k,
    then p·k), so only a [BH, BD] tile of o is live at a time."""
    h = tl.arange(0, BLOCK_H)
    heads = h < HEADS
    s = tl.zeros([BLOCK_H, BLOCK_N], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        live = cols[None, :] < D
        q = tl.load(q_ptr + h[:, None] * D + cols[None, :], mask=heads[:, None] & live, other=0.0)
        k = tl.load(ptrs[:, None] + cols[None, :], mask=valid[:, None] & live, other=0.0)
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
        live = cols[None, :] < D
        k = tl.load(ptrs[:, None] + cols[None, :], mask=valid[:, None] & live, other=0.0)
        o = tl.dot(p, dot_operand(k, UPCAST, PRECISION), input_precision=PRECISION)
        tl.store(part_ptr + h[:, None] * D + cols[None, :], o, mask=heads[:, None] & live)
    tl.store(ml_ptr + h, m, mask=heads)
    tl.store(ml_ptr + HEADS + h, l, mask=heads)


@triton.jit
def combine_slices(part_ptr, ml_ptr, n_slices, sink, h, cols, HEADS: tl.constexpr, D: tl.constexpr):
    """The output tile [BH, BD] (heads h, columns cols) of one query from its n_slices
    partials (part_ptr [n_slices, HEADS, D], ml_ptr [n_slices, 2, HEADS]), always in slice
    order: M = max_s m_s, then l = Σ_s l_s e^(m_s - M) and o = Σ_s o_s e^(m_s - M), so a
    query's result depends on its own keys only, never on the other queries of the call;
    o / (l + e^(sink - M)) as `finish`."""
    heads = h < HEADS
    top = tl.full(h.shape, FLOOR, tl.float32)
    for s in range(n_slices):  # a padding head's max is 0: no e^(sink - FLOOR) overflow
        top = tl.maximum(top, tl.load(ml_ptr + s * 2 * HEADS + h, mask=heads, other=0.0))
    l = tl.zeros(h.shape, tl.float32)
    acc = tl.zeros([h.shape[0], cols.shape[0]], tl.float32)
    for s in range(n_slices):
        a = tl.exp(tl.load(ml_ptr + s * 2 * HEADS + h, mask=heads, other=0.0) - top)
        l += tl.load(ml_ptr + (s * 2 + 1) * HEADS + h, mask=heads, other=0.0) * a
        tile = part_ptr + (s * HEADS + h[:, None]) * D + cols[None, :]
        o = tl.load(tile, mask=heads[:, None] & (cols[None, :] < D), other=0.0)
        acc += o * a[:, None]
    return finish(top, l, acc, sink)
