"""RMSNorm pieces: the inverse RMS of a row (fp32), computed over `n` real elements of a
masked block (masked lanes must be loaded as 0), and whole rows normalised (and rotated)."""

import triton
import triton.language as tl

from v4c.codegen.kernels.rope import rotate


@triton.jit
def inv_rms(x, n: tl.constexpr, eps):
    """1 / sqrt(mean(x²) + eps) for a [BLOCK] fp32 row whose padding lanes are 0."""
    return 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n + eps)


@triton.jit
def norm_row(x_ptr, w_ptr, out_ptr, row, eps, DIM: tl.constexpr, WEIGHTED: tl.constexpr,
             BLOCK: tl.constexpr):  # fmt: skip
    """out[row] = x[row] * inv_rms (* w) of [rows, DIM] rows, fp32 math, one cast back."""
    cols = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * DIM + cols, mask=cols < DIM, other=0.0).to(tl.float32)
    y = x * inv_rms(x, DIM, eps)
    if WEIGHTED:
        y = y * tl.load(w_ptr + cols, mask=cols < DIM, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * DIM + cols, y.to(out_ptr.dtype.element_ty), mask=cols < DIM)


@triton.jit
def norm_rope_row(x_ptr, w_ptr, pos, freqs_ptr, out_ptr, row, eps, DIM: tl.constexpr,
                  NOPE: tl.constexpr, PAIRS: tl.constexpr, WEIGHTED: tl.constexpr,
                  BLOCK: tl.constexpr, BLOCK_P: tl.constexpr):  # fmt: skip
    """The RMSNorm of row `row` of [rows, DIM], then interleaved RoPE at `pos` on its last
    2*PAIRS channels; the normalised pairs are rounded to out's dtype before the rotation,
    as the reference rounds the norm's result."""
    cols = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * DIM + cols, mask=cols < DIM, other=0.0).to(tl.float32)
    r = inv_rms(x, DIM, eps)
    keep = cols < NOPE
    y = x * r
    if WEIGHTED:
        y = y * tl.load(w_ptr + cols, mask=keep, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * DIM + cols, y.to(out_ptr.dtype.element_ty), mask=keep)
    p = tl.arange(0, BLOCK_P)
    even = NOPE + 2 * p
    on = p < PAIRS
    re = tl.load(x_ptr + row * DIM + even, mask=on, other=0.0).to(tl.float32) * r
    im = tl.load(x_ptr + row * DIM + even + 1, mask=on, other=0.0).to(tl.float32) * r
    if WEIGHTED:
        re = re * tl.load(w_ptr + even, mask=on, other=0.0).to(tl.float32)
        im = im * tl.load(w_ptr + even + 1, mask=on, other=0.0).to(tl.float32)
    re = re.to(out_ptr.dtype.element_ty).to(tl.float32)
    im = im.to(out_ptr.dtype.element_ty).to(tl.float32)
    re, im = rotate(re, im, pos, freqs_ptr, PAIRS, BLOCK_P, False)
    tl.store(out_ptr + row * DIM + even, re.to(out_ptr.dtype.element_ty), mask=on)
    tl.store(out_ptr + row * DIM + even + 1, im.to(out_ptr.dtype.element_ty), mask=on)
