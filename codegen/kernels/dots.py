"""The dtype a `tl.dot` operand is taken in, one rule for every kernel.

On a GPU a dot takes 16-bit operands as they are (bf16 tensor cores, fp32 accumulation), and
a value held in fp32 registers (softmax probabilities, a dequantised FP8/FP4 weight tile, an
fp32 scratch activation) is rounded to bf16 for it; a dot with an fp32 operand (PRECISION
"ieee", fp32 runs) stays fp32. Triton's interpreter multiplies the raw bits of bf16 tensors
in `tl.dot`, so under it (UPCAST, rendered from `v4c.envs.triton_interpret()`) every operand
is cast to fp32 instead; the rest of each kernel body is the same on both.

A dot's reduction order is fixed by its K side alone (batch invariance, DESIGN.md): on a GPU
the MMAs sum a row's k16 steps in order whatever the tile's M and N are; the interpreter's
`tl.dot` is one numpy matmul, whose BLAS may sum a row of a longer product differently at
different tile shapes (which kernel OpenBLAS picks depends on the shape and the CPU), so
there every dot whose tile shape follows the number of rows goes through `dot_k16`.
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
def dot_k16(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b for a [M, K] and b [K, N] as `dot_operand` made them (K a multiple of 16).
    One dot on a GPU; under UPCAST K/16 dots of 16 reduction columns, their products summed
    in order and then added to acc: the same bits at any M and N (module docstring)."""
    K: tl.constexpr = a.shape[1]
    if UPCAST and K > 16:
        a3 = tl.permute(tl.reshape(a, [a.shape[0], K // 16, 16]), (1, 0, 2))  # [K/16, M, 16]
        b3 = tl.reshape(b, [K // 16, 16, b.shape[1]])  # [K/16, 16, N]
        acc += tl.sum(tl.dot(a3, b3, input_precision=PRECISION), axis=0)
    else:
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def round_bf16(x):
    """x (finite fp32) rounded to bf16, nearest even, held in fp32: an official bf16 rounding
    point (numerics: official). On the bits, as torch rounds, on a GPU and under the
    interpreter alike (the interpreter's `.to(bfloat16)` truncates)."""
    bits = x.to(tl.int32, bitcast=True)
    bits = (bits + 32767 + ((bits >> 16) & 1)) & -65536
    return bits.to(tl.float32, bitcast=True)
