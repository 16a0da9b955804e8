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
