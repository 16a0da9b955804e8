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
def pair_angles(c0, pos, freqs_ptr, NOPE: tl.constexpr, PAIRS: tl.constexpr,
                BLOCK_D: tl.constexpr):  # fmt: skip
    """(cos, sin, on) [BLOCK_D/2] of the channel pairs of columns c0.. (c0 even) at position
    `pos`, as `rotate` makes them; `on`: the pair is a RoPE one (columns NOPE.. of 2*PAIRS)."""
    i = (c0 - NOPE) // 2 + tl.arange(0, BLOCK_D // 2)  # the pair index of each even column
    on = (i >= 0) & (i < PAIRS)
    angle = pos.to(tl.float32) * tl.load(freqs_ptr + i, mask=on, other=0.0)
    return tl.cos(angle), tl.sin(angle), on


@triton.jit
def rotate_pairs(x, c, s, on, BLOCK_D: tl.constexpr, INVERSE: tl.constexpr):
    """x [R, BLOCK_D] fp32 with its pairs rotated by the angles of `pair_angles` (conjugate
    if INVERSE): split out of the tile ([R, BLOCK_D/2, 2]) and joined back, the pairs off
    `on` unchanged, so a tile of any columns is rotated where it lies."""
    re, im = tl.split(tl.reshape(x, (x.shape[0], BLOCK_D // 2, 2)))
    c, s, on = c[None, :], s[None, :], on[None, :]
    if INVERSE:
        s = -s
    re, im = tl.where(on, re * c - im * s, re), tl.where(on, re * s + im * c, im)
    return tl.reshape(tl.join(re, im), (x.shape[0], BLOCK_D))


@triton.jit
def rotate_tile(x, c0, pos, freqs_ptr, NOPE: tl.constexpr, PAIRS: tl.constexpr,
                BLOCK_D: tl.constexpr, INVERSE: tl.constexpr):  # fmt: skip
    """x [R, BLOCK_D] fp32 holding columns c0.. of rows at position `pos`, its RoPE pairs
    rotated (`pair_angles`, then `rotate_pairs`)."""
    c, s, on = pair_angles(c0, pos, freqs_ptr, NOPE, PAIRS, BLOCK_D)
    return rotate_pairs(x, c, s, on, BLOCK_D, INVERSE)
