"""RMSNorm pieces: the inverse RMS of a row (fp32), computed over `n` real elements of a
masked block (masked lanes must be loaded as 0), and whole rows normalised (and rotated).

INLINE is numerics official's weightless q norm (V4_REFERENCE §12.1): the official code
computes it op by op on a bf16 q, each op rounding its result to q's dtype (`inline_q_norm`
in ir/semantics/norm.py). Those roundings are `round_to` on the bits (the interpreter's cast
truncates), the division and square root IEEE ones (`div_rn`, `sqrt_rn`: torch's rsqrt on a
CPU is 1 / sqrt, both correctly rounded), so the kernel's bf16 results are the reference's.
"""

import triton
import triton.language as tl

from v4c.codegen.kernels.quant import round_to
from v4c.codegen.kernels.rope import rotate


@triton.jit
def inv_rms(x, n: tl.constexpr, eps, AXIS: tl.constexpr):
    """1 / sqrt(mean(x²) + eps) for fp32 rows along AXIS whose padding lanes are 0 (AXIS 0:
    one [BLOCK] row; 1: [R, BLOCK] rows, one scale each)."""
    return 1.0 / tl.sqrt(tl.sum(x * x, axis=AXIS) / n + eps)


@triton.jit
def inline_inv_rms(x, n: tl.constexpr, eps, DTYPE: tl.constexpr, AXIS: tl.constexpr):
    """`inv_rms` as the official q norm computes it in DTYPE: q², mean(q²) (an fp32 sum),
    + eps and rsqrt each rounded to DTYPE."""
    square = round_to(x * x, DTYPE)
    var = round_to(tl.math.div_rn(tl.sum(square, axis=AXIS), n * 1.0), DTYPE)
    root = tl.sqrt_rn(round_to(var + eps, DTYPE))
    return round_to(tl.math.div_rn(1.0, root), DTYPE)


@triton.jit
def row_scale(x, n: tl.constexpr, eps, INLINE: tl.constexpr, DTYPE: tl.constexpr,
              AXIS: tl.constexpr):  # fmt: skip
    """The scale a row (along AXIS, as `inv_rms`) is multiplied by: the fp32 `inv_rms`, or
    under INLINE the official q norm's DTYPE one."""
    if INLINE:
        r = inline_inv_rms(x, n, eps, DTYPE, AXIS)
    else:
        r = inv_rms(x, n, eps, AXIS)
    return r


@triton.jit
def norm_row(x_ptr, w_ptr, out_ptr, row, eps, DIM: tl.constexpr, WEIGHTED: tl.constexpr,
             BLOCK: tl.constexpr, INLINE: tl.constexpr):  # fmt: skip
    """out[row] = x[row] * inv_rms (* w) of [rows, DIM] rows, fp32 math, one cast back
    (rounded on the bits under INLINE, as the official product is)."""
    cols = tl.arange(0, BLOCK)
    dtype = out_ptr.dtype.element_ty
    x = tl.load(x_ptr + row * DIM + cols, mask=cols < DIM, other=0.0).to(tl.float32)
    y = x * row_scale(x, DIM, eps, INLINE, dtype, 0)
    if WEIGHTED:
        y = y * tl.load(w_ptr + cols, mask=cols < DIM, other=0.0).to(tl.float32)
    if INLINE:
        y = round_to(y, dtype)
    tl.store(out_ptr + row * DIM + cols, y.to(dtype), mask=cols < DIM)


@triton.jit
def norm_rope_row(x_ptr, w_ptr, pos, freqs_ptr, out_ptr, row, eps, DIM: tl.constexpr,
                  NOPE: tl.constexpr, PAIRS: tl.constexpr, WEIGHTED: tl.constexpr,
                  BLOCK: tl.constexpr, BLOCK_P: tl.constexpr, INLINE: tl.constexpr):  # fmt: skip
    """The RMSNorm of row `row` of [rows, DIM], then interleaved RoPE at `pos` on its last
    2*PAIRS channels; the normalised pairs are rounded to out's dtype before the rotation,
    as the reference rounds the norm's result (on the bits under INLINE, and the rotated
    pairs too, so the interpreter rounds as torch does)."""
    cols = tl.arange(0, BLOCK)
    dtype = out_ptr.dtype.element_ty
    x = tl.load(x_ptr + row * DIM + cols, mask=cols < DIM, other=0.0).to(tl.float32)
    r = row_scale(x, DIM, eps, INLINE, dtype, 0)
    keep = cols < NOPE
    y = x * r
    if WEIGHTED:
        y = y * tl.load(w_ptr + cols, mask=keep, other=0.0).to(tl.float32)
    if INLINE:
        y = round_to(y, dtype)
    tl.store(out_ptr + row * DIM + cols, y.to(dtype), mask=keep)
    p = tl.arange(0, BLOCK_P)
    even = NOPE + 2 * p
    on = p < PAIRS
    re = tl.load(x_ptr + row * DIM + even, mask=on, other=0.0).to(tl.float32) * r
    im = tl.load(x_ptr + row * DIM + even + 1, mask=on, other=0.0).to(tl.float32) * r
    if WEIGHTED:
        re = re * tl.load(w_ptr + even, mask=on, other=0.0).to(tl.float32)
        im = im * tl.load(w_ptr + even + 1, mask=on, other=0.0).to(tl.float32)
    if INLINE:
        re = round_to(re, dtype)
        im = round_to(im, dtype)
    else:
        re = re.to(dtype).to(tl.float32)
        im = im.to(dtype).to(tl.float32)
    re, im = rotate(re, im, pos, freqs_ptr, PAIRS, BLOCK_P, False)
    if INLINE:
        re = round_to(re, dtype)
        im = round_to(im, dtype)
    tl.store(out_ptr + row * DIM + even, re.to(dtype), mask=on)
    tl.store(out_ptr + row * DIM + even + 1, im.to(dtype), mask=on)
