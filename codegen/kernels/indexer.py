"""The lightning indexer's pieces (V4_REFERENCE §7): a query's rotated heads and its scores
against a block of compressed keys, score(s) = Σ_h w_h ReLU(q_h · K_s)."""

import triton
import triton.language as tl

from v4c.codegen.kernels.dots import dot_operand


@triton.jit
def rotated_queries(
    q_ptr,
    pos,
    freqs_ptr,
    HEADS: tl.constexpr,
    DIM: tl.constexpr,
    NOPE: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One query's heads [BLOCK_H, BLOCK_D] fp32 (rows [HEADS, DIM] at q_ptr, 0 padding) with
    interleaved RoPE at `pos` on channels NOPE..DIM: each channel reads its pair partner."""
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)
    ok = (h < HEADS) & (d < DIM)[None, :]
    q = tl.load(q_ptr + h * DIM + d[None, :], mask=ok, other=0.0)
    partner = tl.load(q_ptr + h * DIM + (d ^ 1)[None, :], mask=ok, other=0.0)
    tail = (d >= NOPE) & (d < DIM)
    f = tl.load(freqs_ptr + (d - NOPE) // 2, mask=tail, other=0.0)
    angle = pos.to(tl.float32) * f
    c = tl.cos(angle)[None, :]
    s = tl.sin(angle)[None, :]
    even = (d % 2 == 0)[None, :]
    rotated = tl.where(even, q * c - partner * s, partner * s + q * c)  # re c - im s, re s + im c
    return tl.where(tail[None, :], rotated, q)


@triton.jit
def block_scores(
    q,
    w,
    keys_ptr,
    key_stride,
    s,
    valid,
    DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Scores [BN] of entries s [BN] (0 where not `valid`) against rotated heads q [BLOCK_H,
    BLOCK_D] weighted by w [BLOCK_H] (0 on padding heads): one dot, heads as its M. fp32
    under UPCAST or fp32 keys (PRECISION "ieee"); on a GPU with bf16 keys q is rounded to
    bf16 for a bf16 tensor-core dot."""
    d = tl.arange(0, BLOCK_D)
    k = tl.load(
        keys_ptr + s[:, None].to(tl.int64) * key_stride + d[None, :],
        mask=valid[:, None] & (d < DIM)[None, :],
        other=0.0,
    )
    q = dot_operand(q, UPCAST, PRECISION)
    k = dot_operand(k, UPCAST, PRECISION)
    dots = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_H, BN]
    return tl.sum(w[:, None] * tl.maximum(dots, 0.0), axis=0)
