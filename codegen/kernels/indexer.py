"""The lightning indexer's pieces (V4_REFERENCE §7): a query's rotated heads and its scores
against a block of compressed keys, score(s) = Σ_h w_h ReLU(q_h · K_s); and the official
numerics' roundings of them (§12, §12.1; numerics: official): q rotated by the
Hadamard transform and rounded to FP4, the bf16 points of the official indexer. Each is the
arithmetic of its reference in ir/semantics/quant.py and indexer.py step for step (the
butterfly's order of sums, the scale's exponent from the float's bits), so the interpreter
matches the reference bit for bit."""

import triton
import triton.language as tl

from v4c.codegen.kernels.dots import dot_operand, round_bf16


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
    interleaved RoPE at `pos` on channels NOPE..DIM: the pairs (2j, 2j + 1) are split apart
    after one contiguous load, rotated, and joined back."""
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)
    ok = (h < HEADS) & (d < DIM)[None, :]
    q = tl.load(q_ptr + h * DIM + d[None, :], mask=ok, other=0.0).to(tl.float32)
    re, im = tl.split(tl.reshape(q, [BLOCK_H, BLOCK_D // 2, 2]))  # channels 2j, 2j + 1
    j = tl.arange(0, BLOCK_D // 2)
    tail = ((2 * j >= NOPE) & (2 * j < DIM))[None, :]
    f = tl.load(freqs_ptr + j - NOPE // 2, mask=(2 * j >= NOPE) & (2 * j < DIM), other=0.0)
    angle = pos.to(tl.float32) * f
    c = tl.cos(angle)[None, :]
    s = tl.sin(angle)[None, :]
    turned = tl.join(tl.where(tail, re * c - im * s, re), tl.where(tail, re * s + im * c, im))
    return tl.reshape(turned, [BLOCK_H, BLOCK_D])  # re c - im s, re s + im c


@triton.jit
def butterfly(x, ROWS: tl.constexpr, N: tl.constexpr, H: tl.constexpr):
    """One stage of the Hadamard butterfly on x [ROWS, N]: the pairs (j, j + H) inside each
    run of 2H -> (a + b, a - b)."""
    runs = tl.permute(tl.reshape(x, [ROWS, N // (2 * H), 2, H]), (0, 1, 3, 2))
    a, b = tl.split(runs)  # [ROWS, N / 2H, H] each
    return tl.reshape(tl.permute(tl.join(a + b, a - b), (0, 1, 3, 2)), [ROWS, N])


@triton.jit
def hadamard(x, ROWS: tl.constexpr, N: tl.constexpr):
    """x [ROWS, N] fp32 (N a power of two, 2..512) times H_N / sqrt(N) (Sylvester order), row
    by row: the butterfly stages of `quant.hadamard` in its order, H = 1, 2, 4, ..."""
    x = butterfly(x, ROWS, N, 1)
    if N > 2:
        x = butterfly(x, ROWS, N, 2)
    if N > 4:
        x = butterfly(x, ROWS, N, 4)
    if N > 8:
        x = butterfly(x, ROWS, N, 8)
    if N > 16:
        x = butterfly(x, ROWS, N, 16)
    if N > 32:
        x = butterfly(x, ROWS, N, 32)
    if N > 64:
        x = butterfly(x, ROWS, N, 64)
    if N > 128:
        x = butterfly(x, ROWS, N, 128)
    if N > 256:
        x = butterfly(x, ROWS, N, 256)
    return x * (N**-0.5)


@triton.jit
def fp4(x, ROWS: tl.constexpr, N: tl.constexpr, BLOCK: tl.constexpr):
    """`quant.fp4_sim` of x [ROWS, N] fp32: blocks of BLOCK along a row, scale 2^k with k =
    ceil(log2(max(amax, 6 * 2^-126) / 6)), values / scale clamped to ±6 and rounded to the
    e2m1 grid {0, .5, 1, 1.5, 2, 3, 4, 6} (a tie to the even code), times the scale."""
    tiles = tl.reshape(x, [ROWS, N // BLOCK, BLOCK])
    ratio = tl.maximum(tl.max(tl.abs(tiles), axis=2), 6.0 * 2.0**-126) / 6.0  # normal floats
    bits = ratio.to(tl.int32, bitcast=True)
    k = ((bits >> 23) & 255) - 127 + ((bits & 8388607) != 0).to(tl.int32)  # ceil(log2)
    scale = ((k + 127) << 23).to(tl.float32, bitcast=True)[:, :, None]
    y = tiles / scale
    a = tl.minimum(tl.abs(y), 6.0)
    # midpoints 0.25 0.75 1.25 1.75 2.5 3.5 5: below a, the code (when a is not on one);
    # at or below a, the larger code of a tie
    down = (a > 0.25).to(tl.int32) + (a > 0.75).to(tl.int32) + (a > 1.25).to(tl.int32)
    down += (a > 1.75).to(tl.int32) + (a > 2.5).to(tl.int32) + (a > 3.5).to(tl.int32)
    down += (a > 5.0).to(tl.int32)
    up = (a >= 0.25).to(tl.int32) + (a >= 0.75).to(tl.int32) + (a >= 1.25).to(tl.int32)
    up += (a >= 1.75).to(tl.int32) + (a >= 2.5).to(tl.int32) + (a >= 3.5).to(tl.int32)
    up += (a >= 5.0).to(tl.int32)
    code = tl.where(down % 2 == 0, down, up)
    magnitude = tl.where(code < 4, code * 0.5, tl.where(code == 7, 6.0, code - 2.0))
    return tl.reshape(tl.where(y < 0, -magnitude, magnitude) * scale, [ROWS, N])


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
    ROUND: tl.constexpr,
):
    """Scores [BN] of entries s [BN] (0 where not `valid`) against rotated heads q [BLOCK_H,
    BLOCK_D] weighted by w [BLOCK_H] (0 on padding heads): one dot, heads as its M. fp32
    under UPCAST or fp32 keys (PRECISION "ieee"); on a GPU with bf16 keys q is rounded to
    bf16 for a bf16 tensor-core dot."""
    d = tl.arange(0, BLOCK_D)
    if DIM == BLOCK_D:  # a mask constant along a key: 16-byte vector loads
        live = tl.broadcast_to(valid[:, None], (valid.shape[0], BLOCK_D))
    else:
        live = valid[:, None] & (d < DIM)[None, :]
    k = tl.load(keys_ptr + s[:, None].to(tl.int64) * key_stride + d[None, :], mask=live, other=0.0)
    q = dot_operand(q, UPCAST, PRECISION)
    k = dot_operand(k, UPCAST, PRECISION)
    dots = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_H, BN]
    if ROUND:  # official, bf16: the q·k einsum writes bf16, each head's weighted score, the sum
        return round_bf16(
            tl.sum(round_bf16(tl.maximum(round_bf16(dots), 0.0) * w[:, None]), axis=0)
        )
    return tl.sum(w[:, None] * tl.maximum(dots, 0.0), axis=0)
