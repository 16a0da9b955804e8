"""The dtype a `tl.dot` operand is taken in, one rule for every kernel.

On a GPU a dot takes 16-bit operands as they are (bf16 tensor cores, fp32 accumulation), and
a value held in fp32 registers (softmax probabilities, a dequantised FP8/FP4 weight tile, an
fp32 scratch activation) is rounded to bf16 for it; a dot with an fp32 operand (PRECISION
"ieee", fp32 runs) stays fp32. Triton's interpreter multiplies the raw bits of bf16 tensors
in `tl.dot`, so under it (UPCAST, rendered from `v4c.envs.triton_interpret()`) every operand
is cast to fp32 instead; the rest of each kernel body is the same on both.
"""

import triton
import triton.language as tl


@triton.jit
def dot_operand(x, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """x in the dtype a dot takes it: fp32 under UPCAST or PRECISION "ieee", else bf16."""
    if UPCAST or PRECISION == "ieee":
        x = x.to(tl.float32)
    else:
        x = x.to(tl.bfloat16)
    return x


@triton.jit
def round_bf16(x):
    """x (finite fp32) rounded to bf16, nearest even, held in fp32: an official bf16 rounding
    point (numerics: official). On the bits, as torch rounds, on a GPU and under the
    interpreter alike (the interpreter's `.to(bfloat16)` truncates)."""
    bits = x.to(tl.int32, bitcast=True)
    bits = (bits + 32767 + ((bits >> 16) & 1)) & -65536
    return bits.to(tl.float32, bitcast=True)
