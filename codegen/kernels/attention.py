"""Sparse attention pieces (V4_REFERENCE §5, §8): an online softmax with a sink over key rows
gathered from the ring buffer, this step's kv and the compressed entries, and the grouped
output projection's tile.

The softmax state of a block of heads is (m, l, acc): running max [BH], running sum [BH] and
unnormalised output [BH, BD], all fp32. m starts at a finite floor rather than -inf, so a
block whose keys are all masked leaves the state as it is (no -inf - -inf); every query sees
at least itself, so the final m is a real logit and the sink is measured against it.
Keys are values (one shared kv head): a gathered tile [BN, BD] feeds both products. Masked
lanes are loaded as 0 and their logits set to -inf.

Products take their operands as `dot_operand` gives them (kernels/dots.py): bf16 when every
operand came from bf16 (PRECISION "tf32"; the probabilities are rounded to bf16 for p·v, as
the official kernels do), fp32 with "ieee" when one is fp32. Under the interpreter (UPCAST)
every operand is fp32 and "tf32" products are exact for bf16 inputs (q·k matches the fp32
reference; the probabilities round to TF32).
"""

import triton
import triton.language as tl

from v4c.codegen.kernels.dots import dot_operand


@triton.jit
def init_state(BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """Empty softmax state: (m [BH], l [BH], acc [BH, BD])."""
    m = tl.full([BLOCK_H], -1.0e30, tl.float32)
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
    acc = acc * alpha[:, None] + tl.dot(
        dot_operand(p, UPCAST, PRECISION), k, input_precision=PRECISION
    )
    return m_new, l, acc


@triton.jit
def attend_ring(
    q,
    ring_ptr,
    ring_stride,
    pos,
    start,
    m,
    l,
    acc,
    scale,
    W: tl.constexpr,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Window keys written by earlier steps: positions p in (pos - W, start), p >= 0, which
    the ring holds at slot p % W (it holds exactly positions start-W .. start-1)."""
    lo = tl.maximum(tl.maximum(pos - W + 1, start - W), 0)
    for p0 in range(lo, start, BLOCK_N):
        p = p0 + tl.arange(0, BLOCK_N)
        m, l, acc = fold_rows(
            q,
            ring_ptr + (p % W) * ring_stride,
            p < start,
            m,
            l,
            acc,
            scale,
            D,
            BLOCK_D,
            PRECISION,
            UPCAST,
        )
    return m, l, acc


@triton.jit
def attend_step(
    q,
    kv_ptr,
    pos_ptr,
    t,
    pos,
    m,
    l,
    acc,
    scale,
    W: tl.constexpr,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Window keys of this step: token j of the row (kv_ptr, pos_ptr at the row's start) is
    seen by token t iff pos - W < pos_j <= pos. A row's positions are consecutive, so only
    tokens t-W+1 .. t are looked at."""
    for j0 in range(tl.maximum(t - W + 1, 0), t + 1, BLOCK_N):
        j = j0 + tl.arange(0, BLOCK_N)
        key_pos = tl.load(pos_ptr + j, mask=j <= t, other=0)
        valid = (j <= t) & (key_pos <= pos) & (key_pos > pos - W)
        m, l, acc = fold_rows(
            q, kv_ptr + j.to(tl.int64) * D, valid, m, l, acc, scale, D, BLOCK_D, PRECISION, UPCAST
        )
    return m, l, acc


@triton.jit
def attend_visible(
    q,
    comp_ptr,
    comp_stride,
    n_entries,
    pos,
    m,
    l,
    acc,
    scale,
    RATIO: tl.constexpr,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """HCA: every compressed entry w < (pos + 1) // RATIO (of the n_entries stored)."""
    hi = tl.minimum((pos + 1) // RATIO, n_entries)
    for w0 in range(0, hi, BLOCK_N):
        w = w0 + tl.arange(0, BLOCK_N)
        m, l, acc = fold_rows(
            q,
            comp_ptr + w.to(tl.int64) * comp_stride,
            w < hi,
            m,
            l,
            acc,
            scale,
            D,
            BLOCK_D,
            PRECISION,
            UPCAST,
        )
    return m, l, acc


@triton.jit
def attend_topk(
    q,
    comp_ptr,
    comp_stride,
    n_entries,
    idx_ptr,
    m,
    l,
    acc,
    scale,
    TOPK: tl.constexpr,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """CSA: the compressed entries the indexer picked for this token (idx_ptr [TOPK]); -1 is
    no pick. Picks are distinct (the indexer's top-k), so none is counted twice."""
    for k0 in range(0, TOPK, BLOCK_N):
        k = k0 + tl.arange(0, BLOCK_N)
        w = tl.load(idx_ptr + k, mask=k < TOPK, other=-1).to(tl.int64)
        valid = (w >= 0) & (w < n_entries)
        m, l, acc = fold_rows(
            q, comp_ptr + w * comp_stride, valid, m, l, acc, scale, D, BLOCK_D, PRECISION, UPCAST
        )
    return m, l, acc


@triton.jit
def finish(m, l, acc, sink):
    """o = acc / (l + e^(sink - m)): the sink [BH] (raw logit) only enlarges the denominator."""
    return acc / (l + tl.exp(sink - m))[:, None]
