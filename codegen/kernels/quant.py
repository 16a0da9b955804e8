"""The activation roundings of `numerics: official` (V4_REFERENCE §12) on register tiles,
bit-equal to `ir/semantics/quant.py`.

The roundings are written with integer bit operations rather than casts to `tl.float8e4nv`
or `tl.bfloat16`: Triton's interpreter truncates those casts (even when asked for "rtne")
where the GPU rounds to nearest even, so a cast would make the CPU tests disagree with the
GPU, and the bit form is exact on both.
"""

import triton
import triton.language as tl


@triton.jit
def e4m3_round(y):
    """fp32 y with |y| <= 448 rounded to the nearest e4m3 value, ties to even (torch's cast to
    float8_e4m3fn): 3 mantissa bits from 2^-6 up, steps of 2^-9 below (e4m3's subnormals)."""
    bits = y.to(tl.int32, bitcast=True)
    lsb = (bits >> 20) & 1
    normal = ((bits + 0x7FFFF + lsb) & -0x100000).to(tl.float32, bitcast=True)
    magic = 12582912.0  # 1.5 * 2^23: (t + magic) - magic is t rounded to an integer, ties even
    sub = ((tl.abs(y) * 512.0 + magic) - magic) * 0.001953125
    sub = (sub.to(tl.int32, bitcast=True) | (bits & -0x80000000)).to(tl.float32, bitcast=True)
    return tl.where(tl.abs(y) < 0.015625, sub, normal)  # sub keeps y's sign, as -0 too


@triton.jit
def fp8_round_rows(x):
    """Each row of x [R, BLOCK] fp32 (one quantisation block along the row; zero padding
    leaves its amax alone) quantised to FP8 and back as `act_quant_fp8` does: scale
    s = 2^ceil(log2(max(amax, 1e-4) / 448)) read off the bits of the correctly rounded
    quotient, x / s clamped to +-448 and rounded to e4m3, times s. -> [R, BLOCK] fp32."""
    amax = tl.max(tl.abs(x), axis=1)  # [R]
    ratio = tl.math.div_rn(tl.maximum(amax, 1e-4), 448.0)  # >= 2^-22: a normal fp32
    bits = ratio.to(tl.int32, bitcast=True)
    k = ((bits >> 23) & 255) - 127 + ((bits & 0x7FFFFF) != 0).to(tl.int32)  # ceil(log2(ratio))
    s = ((k + 127) << 23).to(tl.float32, bitcast=True)[:, None]  # 2^k, k in [-22, 121]
    inv = ((127 - k) << 23).to(tl.float32, bitcast=True)[:, None]  # 2^-k: x * inv == x / s
    y = tl.minimum(tl.maximum(x * inv, -448.0), 448.0)
    return e4m3_round(y) * s


@triton.jit
def round_to(x, DTYPE: tl.constexpr):
    """fp32 x rounded to DTYPE (bf16: to nearest, ties to even; fp32: unchanged) and held in
    fp32 again, as `ir.semantics.quant.round_to` does: one of the official bf16 roundings."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -0x10000
        x = bits.to(tl.float32, bitcast=True)
    return x
