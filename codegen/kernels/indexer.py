"""The lightning indexer's pieces (V4_REFERENCE §7): a query's rotated heads and its packed
scores against a chunk of compressed keys, score(s) = Σ_h w_h ReLU(q_h · K_s)."""

import triton
import triton.language as tl

from v4c.codegen.kernels.dots import dot_operand
from v4c.codegen.kernels.topk import EMPTY, pack


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
def chunk_scores(
    q,
    w,
    keys_ptr,
    key_stride,
    n0,
    n_visible,
    DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SUBS: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Packed scores [SUBS * BLOCK_N] of entries n0.. against rotated heads q [BLOCK_H, BLOCK_D]
    weighted by w [BLOCK_H] (0 on padding heads); EMPTY at entries >= n_visible. Keys are
    scored BLOCK_N at a time (one dot) and gathered into one chunk for the top-k merge. The
    dot is fp32 ("ieee": q is fp32) under UPCAST or fp32 keys (PRECISION "ieee"); on a GPU
    with bf16 keys q is rounded to bf16 for a bf16 dot."""
    q = dot_operand(q, UPCAST, PRECISION)
    d = tl.arange(0, BLOCK_D)
    sub = tl.arange(0, SUBS)[:, None]
    out = tl.full([SUBS, BLOCK_N], EMPTY, tl.int64)
    for j in range(SUBS):
        s = n0 + j * BLOCK_N + tl.arange(0, BLOCK_N)
        ok = s < n_visible
        k = tl.load(
            keys_ptr + s[:, None] * key_stride + d[None, :],
            mask=ok[:, None] & (d < DIM)[None, :],
            other=0.0,
        )
        k = dot_operand(k, UPCAST, PRECISION)
        dots = tl.dot(q, tl.trans(k), input_precision="ieee")  # [BLOCK_H, BLOCK_N]
        score = tl.sum(w[:, None] * tl.maximum(dots, 0.0), axis=0)  # [BLOCK_N]
        out = tl.where(sub == j, pack(score, s, ok)[None, :], out)
    return tl.reshape(out, [SUBS * BLOCK_N])
