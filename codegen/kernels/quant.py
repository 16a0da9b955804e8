"""The official activation rounding of an FP8 GEMM's input (V4_REFERENCE §12,
`ir.semantics.quant.act_quant_fp8`), for a kernel's prologue: each row of a block of 128
values gets the power-of-two scale s = 2^ceil(log2(max(amax, 1e-4) / 448)) and is rounded
to e4m3 after x / s is clamped to ±448. The dense GEMMs, the expert GEMMs and attention
share it, so every kernel rounds as the reference does, bit for bit.

The exponent is read off the bits of the fp32 quotient (exact, as `frexp` is in the
reference); the quotient is an IEEE division (`div_rn`), not the fast approximate one a
`/` compiles to, so a block whose amax / 448 is a power of two (or one ulp from it) gets the
reference's scale. Dividing by s is multiplying by the exact power of two 2^-k.

The rounding to e4m3 on a GPU is the hardware cast (round to nearest even, the same as
torch's). Triton's interpreter casts fp32 -> fp8 wrongly (ties round up and a carry out of
the mantissa is lost), so under UPCAST the value is rounded on the e4m3 grid in fp32
arithmetic instead and stays fp32 (exactly the e4m3 value); the dots take fp32 there anyway.
"""

import triton
import triton.language as tl

E4M3_MAX = tl.constexpr(448.0)
FP8_AMAX_FLOOR = tl.constexpr(1e-4)
ROUNDER = tl.constexpr(12582912.0)  # 1.5 * 2^23: t + it - it rounds t to an integer, ties even


@triton.jit
def pow2(k):
    """2^k as fp32 for int32 k in [-126, 127], from the bits."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def e4m3_grid(y):
    """fp32 y (|y| <= 448) rounded to the nearest e4m3 value, ties to even, in fp32: the
    spacing is 2^(e - 3) in the binade 2^e, and 2^-9 below the normal range (e < -6)."""
    e = ((y.to(tl.int32, bitcast=True) >> 23) & 255) - 127
    ulp = pow2(tl.maximum(e, -6) - 3)
    t = y / ulp  # exact: a power of two
    return ((t + ROUNDER) - ROUNDER) * ulp


@triton.jit
def to_e4m3(y, UPCAST: tl.constexpr):
    """y (fp32, clamped to ±448) as the dot's e4m3 operand: fp8 on a GPU, its exact value in
    fp32 under the interpreter."""
    if UPCAST:
        q = e4m3_grid(y)
    else:
        q = y.to(tl.float8e4nv)
    return q


@triton.jit
def act_quant_rows(x, UPCAST: tl.constexpr):
    """x [R, BLOCK] (one 128-block of each row; padding is 0) -> (q [R, BLOCK] e4m3 (see
    `to_e4m3`), s [R] fp32): x ≈ q * s[:, None], as `act_quant_fp8` rounds it."""
    x = x.to(tl.float32)
    amax = tl.maximum(tl.max(tl.abs(x), axis=1), FP8_AMAX_FLOOR)
    ratio = tl.math.div_rn(amax, tl.full(amax.shape, E4M3_MAX, tl.float32))
    bits = ratio.to(tl.int32, bitcast=True)
    k = ((bits >> 23) & 255) - 127 + ((bits & 0x7FFFFF) != 0).to(tl.int32)  # ceil(log2 ratio)
    y = x * pow2(-k)[:, None]
    y = tl.minimum(tl.maximum(y, -E4M3_MAX), E4M3_MAX)
    return to_e4m3(y, UPCAST), pow2(k)
