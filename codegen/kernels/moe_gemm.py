"""The expert GEMMs: weight tiles dequantised on the fly from their stored format, one
linear tile over a whole reduction, the clamped SwiGLU, and the map from a grouped GEMM's
tile to its expert group.

Weight formats (FMT): "bf16" / "fp32" plain tensors; "fp8" e4m3 with one E8M0 scale per
[SB_O, SB_I] block; "fp4" e2m1 packed two per byte (element 2k in the low nibble of byte k)
with one E8M0 scale per SB_I inputs of a row. A weight matrix is [OUT, IN] and every
product reduces over IN, as `x @ W.T` does. Only the tile a program needs is dequantised,
straight into fp32 registers, then given to the dot as `dot_operand` takes it (kernels/dots.py):
bf16 on a GPU (fp8 and fp4 values times E8M0 scales are exact in bf16), fp32 under the
interpreter, where fp8, fp4 and bf16 values are exact in tf32 and a tf32 dot of bf16
activations against them rounds no product.

Legend: BM rows (token slots), BN outputs, BK reduction chunk of one step.
"""

import torch
import triton
import triton.language as tl

from v4c.codegen.kernels.dots import dot_operand


def weight_planes(w):
    """(data, scale bytes) to pass for a weight: a `QuantWeight` gives its stored data and
    its E8M0 scales as uint8; a plain tensor is its own (unused) scale operand."""
    if isinstance(w, torch.Tensor):
        return w.contiguous(), w
    return w.data.contiguous(), w.scale.view(torch.uint8).contiguous()


@triton.jit
def e8m0_value(b):
    """E8M0 bytes -> fp32 2^(b - 127), built from the bits (byte 0 is the subnormal 2^-127)."""
    b = b.to(tl.int32)
    return tl.where(b == 0, 5.877471754111438e-39, (b << 23).to(tl.float32, bitcast=True))


@triton.jit
def e2m1_value(code):
    """e2m1 codes 0..15 (int32) -> fp32: bit 3 the sign, bits 2-1 the exponent, bit 0 the
    mantissa; magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6."""
    ex = (code >> 1) & 3
    half = (code & 1).to(tl.float32) * 0.5
    power = tl.where(ex == 3, 4.0, tl.where(ex == 2, 2.0, 1.0))  # 2^(ex - 1) for ex >= 1
    mag = tl.where(ex == 0, half, (1.0 + half) * power)
    return tl.where((code & 8) != 0, -mag, mag)


@triton.jit
def expert_base(
    e,
    OUT: tl.constexpr,
    IN: tl.constexpr,
    FMT: tl.constexpr,
    SB_O: tl.constexpr,
    SB_I: tl.constexpr,
):
    """Element offsets (data, scale) of expert e's [OUT, IN] matrix in a stack of them (int64:
    a stack of experts outgrows int32)."""
    e = e.to(tl.int64)
    if FMT == "fp4":
        return e * (OUT * (IN // 2)), e * (OUT * (IN // SB_I))
    elif FMT == "fp8":
        return e * (OUT * IN), e * (((OUT + SB_O - 1) // SB_O) * ((IN + SB_I - 1) // SB_I))
    else:
        return e * (OUT * IN), e * 0


@triton.jit
def weight_tile(
    w_ptr,
    s_ptr,
    o,
    i,
    mask,
    IN: tl.constexpr,
    FMT: tl.constexpr,
    SB_O: tl.constexpr,
    SB_I: tl.constexpr,
):
    """W[o, i] in fp32 for broadcastable row/column index tiles o, i of one [OUT, IN]
    matrix stored at w_ptr in format FMT (its scales at s_ptr)."""
    if FMT == "fp4":
        byte = tl.load(w_ptr + o * (IN // 2) + i // 2, mask=mask, other=0).to(tl.int32)
        code = (byte >> ((i % 2) * 4)) & 15
        b = tl.load(s_ptr + o * (IN // SB_I) + i // SB_I, mask=mask, other=127)
        return e2m1_value(code) * e8m0_value(b)
    elif FMT == "fp8":
        q = tl.load(w_ptr + o * IN + i, mask=mask, other=0.0).to(tl.float32)
        blocks_in = (IN + SB_I - 1) // SB_I
        b = tl.load(s_ptr + (o // SB_O) * blocks_in + i // SB_I, mask=mask, other=127)
        return q * e8m0_value(b)
    else:
        return tl.load(w_ptr + o * IN + i, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def linear_tile(
    a_ptr,
    rows,
    row_on,
    w_ptr,
    s_ptr,
    n0,
    OUT: tl.constexpr,
    IN: tl.constexpr,
    FMT: tl.constexpr,
    SB_O: tl.constexpr,
    SB_I: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """A[rows, :] @ W[n0:n0+BN, :]^T -> [BM, BN] fp32, A a row-major [*, IN] activation
    (rows [BM] may gather), W one [OUT, IN] matrix; masked rows and outputs give 0. An fp32 A
    under bf16 activations (the scratch h) is rounded to bf16 for the dot on a GPU."""
    n = n0 + tl.arange(0, BN)
    k = tl.arange(0, BK)
    rows = rows.to(tl.int64)
    acc = tl.zeros([rows.shape[0], BN], dtype=tl.float32)
    for k0 in range(0, IN, BK):
        kk = k0 + k
        k_on = kk < IN
        a = tl.load(
            a_ptr + rows[:, None] * IN + kk[None, :],
            mask=row_on[:, None] & k_on[None, :],
            other=0.0,
        )  # [BM, BK]
        w = weight_tile(
            w_ptr,
            s_ptr,
            n[None, :],
            kk[:, None],
            k_on[:, None] & (n < OUT)[None, :],
            IN,
            FMT,
            SB_O,
            SB_I,
        )  # [BK, BN]: W^T
        a = dot_operand(a, UPCAST, PRECISION)
        acc = tl.dot(a, dot_operand(w, UPCAST, PRECISION), acc, input_precision=PRECISION)
    return acc


@triton.jit
def clamped_swiglu(gate, up, LIMIT: tl.constexpr):
    """silu(min(gate, LIMIT)) * clamp(up, -LIMIT, LIMIT); LIMIT 0 means no clamp."""
    if LIMIT > 0:
        gate = tl.minimum(gate, LIMIT)
        up = tl.minimum(tl.maximum(up, -LIMIT), LIMIT)
    return gate * tl.sigmoid(gate) * up


@triton.jit
def expert_tile(offsets_ptr, tile, E: tl.constexpr, BLOCK_E: tl.constexpr, BM: tl.constexpr):
    """Tile `tile` of a grouped GEMM whose tiles go expert by expert, ceil(count / BM) each
    (none for an empty expert), read from offsets [E+1] on the device.
    -> (expert, first sorted row, end of the expert's rows); expert == E past the last tile."""
    ex = tl.arange(0, BLOCK_E)
    on = ex < E
    lo = tl.load(offsets_ptr + ex, mask=on, other=0).to(tl.int32)
    hi = tl.load(offsets_ptr + ex + 1, mask=on, other=0).to(tl.int32)
    tiles = (hi - lo + BM - 1) // BM  # [BLOCK_E]
    ends = tl.cumsum(tiles, axis=0)  # one past each expert's last tile
    e = tl.sum((on & (ends <= tile)).to(tl.int32), axis=0)
    mine = ex == e
    first = tl.sum(tl.where(mine, ends - tiles, 0), axis=0)
    start = tl.sum(tl.where(mine, lo, 0), axis=0) + (tile - first) * BM
    return e, start, tl.sum(tl.where(mine, hi, 0), axis=0)
