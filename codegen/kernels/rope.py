"""Interleaved RoPE on register tiles: channel pairs (2i, 2i+1) as complex numbers."""

import triton
import triton.language as tl


@triton.jit
def rotate(
    re, im, pos, freqs_ptr, PAIRS: tl.constexpr, BLOCK_P: tl.constexpr, INVERSE: tl.constexpr
):
    """(re, im) [BLOCK_P] fp32 rotated by angle pos * f_i (conjugate if INVERSE)."""
    i = tl.arange(0, BLOCK_P)
    f = tl.load(freqs_ptr + i, mask=i < PAIRS, other=0.0)
    angle = pos.to(tl.float32) * f
    c = tl.cos(angle)
    s = tl.sin(angle)
    if INVERSE:
        s = -s
    return re * c - im * s, re * s + im * c


@triton.jit
def rotate_tile(x, c0, pos, freqs_ptr, NOPE: tl.constexpr, PAIRS: tl.constexpr,
                BLOCK_D: tl.constexpr, INVERSE: tl.constexpr):  # fmt: skip
    """x [R, BLOCK_D] fp32 holding columns c0.. of rows (c0 even) at position `pos`, with the
    pairs of the RoPE channels (columns NOPE.. of 2*PAIRS) rotated as `rotate` rotates them:
    the pairs are split out of the tile ([R, BLOCK_D/2, 2]) and joined back, the others pass
    through unchanged, so a tile of any columns is rotated where it lies."""
    re, im = tl.split(tl.reshape(x, (x.shape[0], BLOCK_D // 2, 2)))
    i = (c0 - NOPE) // 2 + tl.arange(0, BLOCK_D // 2)  # the pair index of each even column
    on = ((i >= 0) & (i < PAIRS))[None, :]
    f = tl.load(freqs_ptr + i, mask=(i >= 0) & (i < PAIRS), other=0.0)
    angle = pos.to(tl.float32) * f
    c = tl.cos(angle)[None, :]
    s = tl.sin(angle)[None, :]
    if INVERSE:
        s = -s
    re, im = tl.where(on, re * c - im * s, re), tl.where(on, re * s + im * c, im)
    return tl.reshape(tl.join(re, im), (x.shape[0], BLOCK_D))
