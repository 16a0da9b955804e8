"""The activation roundings of `numerics: official` (V4_REFERENCE §12) on register tiles,
bit-equal to `ir/semantics/quant.py`; the dense GEMMs, the expert GEMMs and attention share
them, so every kernel rounds as the reference does.

FP8 activations (`act_quant_fp8`): each row of a block of 128 values gets the power-of-two
scale s = 2^ceil(log2(max(amax, 1e-4) / 448)) and is rounded to e4m3 after x / s is clamped
to ±448. The exponent is read off the bits of the fp32 quotient (exact, as `frexp` is in the
reference); the quotient is an IEEE division (`div_rn`), not the fast approximate one a `/`
compiles to, so a block whose amax / 448 is a power of two (or one ulp from it) gets the
reference's scale. Dividing by s is multiplying by the exact power of two 2^-k.

Roundings are written with integer bit operations where the interpreter must agree with the
GPU: Triton's interpreter truncates casts to `tl.float8e4nv` and `tl.bfloat16` (even when
asked for "rtne") where the GPU rounds to nearest even.
"""

import triton
import triton.language as tl

from v4c.codegen.kernels.dots import round_bf16

E4M3_MAX = tl.constexpr(448.0)
FP8_AMAX_FLOOR = tl.constexpr(1e-4)


@triton.jit
def pow2(k):
    """2^k as fp32 for int32 k in [-126, 127], from the bits."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def e4m3_round(y):
    """fp32 y with |y| <= 448 rounded to the nearest e4m3 value, ties to even (torch's cast to
    float8_e4m3fn), held in fp32: 3 mantissa bits from 2^-6 up, steps of 2^-9 below (e4m3's
    subnormals)."""
    bits = y.to(tl.int32, bitcast=True)
    lsb = (bits >> 20) & 1
    normal = ((bits + 0x7FFFF + lsb) & -0x100000).to(tl.float32, bitcast=True)
    magic = 12582912.0  # 1.5 * 2^23: (t + magic) - magic is t rounded to an integer, ties even
    sub = ((tl.abs(y) * 512.0 + magic) - magic) * 0.001953125
    sub = (sub.to(tl.int32, bitcast=True) | (bits & -0x80000000)).to(tl.float32, bitcast=True)
    return tl.where(tl.abs(y) < 0.015625, sub, normal)  # sub keeps y's sign, as -0 too


@triton.jit
def block_scaled(x):
    """x [R, BLOCK] fp32 (one 128-block of each row; zero padding leaves its amax alone) ->
    (y [R, BLOCK] = x / s clamped to ±448, k [R]) with s = 2^k the block's FP8 scale."""
    amax = tl.maximum(tl.max(tl.abs(x), axis=1), FP8_AMAX_FLOOR)
    ratio = tl.math.div_rn(amax, tl.full(amax.shape, E4M3_MAX, tl.float32))  # a normal fp32
    bits = ratio.to(tl.int32, bitcast=True)
    k = ((bits >> 23) & 255) - 127 + ((bits & 0x7FFFFF) != 0).to(tl.int32)  # ceil(log2 ratio)
    y = x * pow2(-k)[:, None]
    return tl.minimum(tl.maximum(y, -E4M3_MAX), E4M3_MAX), k


@triton.jit
def act_quant_rows(x, UPCAST: tl.constexpr):
    """x [R, BLOCK] -> (q [R, BLOCK] e4m3, s [R] fp32) with x ≈ q * s[:, None], as
    `act_quant_fp8` rounds it: q is the FP8 dot operand on a GPU (the hardware cast rounds to
    nearest even), its exact value in fp32 under the interpreter."""
    y, k = block_scaled(x.to(tl.float32))
    if UPCAST:
        q = e4m3_round(y)
    else:
        q = y.to(tl.float8e4nv)
    return q, pow2(k)


@triton.jit
def fp8_round_rows(x):
    """x [R, BLOCK] fp32 quantised to FP8 and back as `act_quant_fp8` does -> [R, BLOCK] fp32
    (the FP4 expert GEMMs' prologue: their dots take bf16, so the rounding stays in fp32)."""
    y, k = block_scaled(x)
    return e4m3_round(y) * pow2(k)[:, None]


@triton.jit
def round_to(x, DTYPE: tl.constexpr):
    """fp32 x rounded to DTYPE (bf16: to nearest, ties to even; fp32: unchanged) and held in
    fp32 again, as `ir.semantics.quant.round_to` does: one of the official bf16 roundings."""
    if DTYPE == tl.bfloat16:
        x = round_bf16(x)
    return x
