"""The expert GEMMs: weight tiles decoded on the fly from their stored format, linear tiles
over a range of the reduction, the clamped SwiGLU, and the map from a grouped GEMM's tile to
its expert group.

Weight formats (FMT): "bf16" / "fp32" plain tensors; "fp8" e4m3 with one E8M0 scale per
[SB_O, SB_I] block; "fp4" e2m1 packed two per byte (element 2k in the low nibble of byte k)
with one E8M0 scale per SB_I inputs of a row. A weight matrix is [OUT, IN], stored row-major
as the checkpoint holds it (no load-time re-layout), and every product reduces over IN, as
`x @ W.T` does.

A weight tile is [BN outputs, BK inputs] with the inputs, the stored rows' contiguous axis,
innermost, so a thread copies 16 consecutive bytes of a row (32 FP4 codes, 16 FP8 values)
and each tile is decoded once for the BM rows of its program. FP4 is read as int32 words of
8 codes and decoded straight to bf16 two codes at a time (`e2m1_pairs`: 2.5 operations a
code, its E8M0 scale folded into a packed bf16 multiply), regrouped in registers into the
stored order (`e2m1_tile`), so one dot a step meets the activation as loaded (`tile_dot`).
Tiles go to the dot as
`dot_operand` takes them (kernels/dots.py): bf16 on a GPU (fp8 and fp4 values times E8M0
scales are exact in bf16), fp32 under the interpreter.

Legend: BM rows (token slots), BN outputs, BK reduction step (>= 16, 128 for FP4; under
ROUND one FP8 activation block: 128, or all of a shorter IN), G = BK / SB_I scale groups of a
step.
"""

import torch
import triton
import triton.language as tl

from v4c.codegen.kernels.dots import dot_k16, dot_operand
from v4c.codegen.kernels.quant import fp8_round_rows, round_to


def weight_planes(w):
    """(data, scale bytes) to pass for a weight: a `QuantWeight` gives its stored data and
    its E8M0 scales as uint8; a plain tensor is its own (unused) scale operand."""
    if isinstance(w, torch.Tensor):
        return w.contiguous(), w
    return w.data.contiguous(), w.scale.view(torch.uint8).contiguous()


def row_tile(slots: int, groups: int) -> tuple[int, int]:
    """(BM, num_warps) of a grouped GEMM over `slots` rows in `groups` groups: the mean
    group rounded up to 16 (a decode step: tl.dot's least), 64 or 128 rows. Only the row
    tiling follows the row count; the reduction steps never do."""
    mean = -(-slots // groups)
    if mean <= 16:
        return 16, 4
    return (64, 4) if mean <= 64 else (128, 8)


@triton.jit
def e8m0_value(b):
    """E8M0 bytes -> fp32 2^(b - 127), built from the bits (byte 0 is the subnormal 2^-127)."""
    b = b.to(tl.int32)
    return tl.where(b == 0, 5.877471754111438e-39, (b << 23).to(tl.float32, bitcast=True))


@triton.jit
def e2m1_pairs(words, factor, J: tl.constexpr, UPCAST: tl.constexpr):
    """Inputs 8i + J and 8i + J + 4 of each int32 word [BN, BK/8] of FP4 codes (word i holds
    inputs 8i..8i+7 of a row, input 8i + j in bits 4j..4j+3) times their word's factor
    (`fp4_words`) -> [BN, BK/8, 2] bf16, [:, i, t] holding input 8i + J + 4t, exactly.

    Both codes of a pair are placed at once, in the two bf16 halves of one int32: sign to bit
    15 (31), the two exponent bits to the bottom of bf16's exponent and the mantissa bit to
    the top of its mantissa, so each half holds value * 2^-126 (code 1, 0.5, lands on the
    subnormal 2^-127); one packed bf16 multiply by the factor (fma.rn.bf16x2 with -0 added,
    exact: the products have at most 2 significant bits) gives the weights. Two shifts, two
    masks and half a multiply per code, no conversion. Under UPCAST (the interpreter, whose
    bf16 arithmetic works on raw bits and flushes subnormals) the same bits are read as fp32
    and the same exact products taken there; the tile is fp32."""
    MAG: tl.constexpr = 6 - 4 * J  # magnitude bits 4J..4J+2 -> 6..8, and 4J+16.. -> 22..24
    if MAG >= 0:
        magnitude = words << MAG
    else:
        magnitude = words >> -MAG
    sign = words << (12 - 4 * J)  # bits 4J+3 and 4J+19 -> 15 and 31
    bits = (magnitude & 0x01C001C0) | (sign & -0x7FFF8000)  # masks 0x01C001C0, 0x80008000
    if UPCAST:  # bf16 pattern p is fp32 pattern p << 16
        f = (factor << 16).to(tl.float32, bitcast=True)
        lo = (bits << 16).to(tl.float32, bitcast=True) * f
        hi = (bits & -0x10000).to(tl.float32, bitcast=True) * f
    else:
        lo, hi = tl.inline_asm_elementwise(
            "{ .reg .b32 p, z; mov.b32 z, 0x80008000; fma.rn.bf16x2 p, $2, $3, z; "
            "mov.b32 {$0, $1}, p; }",
            "=h,=h,r,r", [bits, factor], dtype=(tl.bfloat16, tl.bfloat16), is_pure=True,
            pack=1,
        )  # fmt: skip
    return tl.join(lo, hi)


@triton.jit
def e2m1_tile(words, factor, UPCAST: tl.constexpr):
    """The FP4 tile of `fp4_words` decoded -> [BN, BK] bf16 (fp32 under UPCAST) in the stored
    order: input 8i + 4t + j from `e2m1_pairs(words, factor, j)[:, i, t]`, the pairs regrouped
    in registers, so the tile meets the activation as loaded, in one dot a step. (A pair order
    that skips the regrouping needs the activation permuted instead, which on sm_90 turns its
    16-byte copies at prefill into 8-byte loads.)"""
    q0 = e2m1_pairs(words, factor, 0, UPCAST)
    q1 = e2m1_pairs(words, factor, 1, UPCAST)
    q2 = e2m1_pairs(words, factor, 2, UPCAST)
    q3 = e2m1_pairs(words, factor, 3, UPCAST)
    w = tl.join(tl.join(q0, q1), tl.join(q2, q3))  # [BN, BK/8, 2 (t), 2 (d), 2 (c)], j = 2c + d
    w = tl.permute(w, (0, 1, 2, 4, 3))  # input 8i + 4t + 2c + d
    return tl.reshape(w, [w.shape[0], w.shape[1] * 8])


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
def group_scales(s_ptr, rows, on, k0, IN: tl.constexpr, SB_I: tl.constexpr, BK: tl.constexpr):
    """The fp32 scales of the BK inputs from k0 for scale rows `rows` [BN] of a row-major
    [*, ceil(IN / SB_I)] E8M0 matrix -> [BN, G] (G = 1 where one block spans the BK inputs)."""
    blocks = (IN + SB_I - 1) // SB_I
    if SB_I >= BK:
        b = tl.load(s_ptr + rows[:, None] * blocks + k0 // SB_I, mask=on[:, None], other=127)
    else:
        g = k0 // SB_I + tl.arange(0, BK // SB_I)
        b = tl.load(s_ptr + rows[:, None] * blocks + g[None, :],
                    mask=on[:, None] & (g < blocks)[None, :], other=127)  # fmt: skip
    return e8m0_value(b)


@triton.jit
def scaled(w, s, SB_I: tl.constexpr, BK: tl.constexpr):
    """w [BN, BK] times its group scales s [BN, G] (each on SB_I consecutive inputs)."""
    if SB_I >= BK:
        return w * s
    else:
        w = tl.reshape(w, [w.shape[0], BK // SB_I, SB_I]) * s[:, :, None]
        return tl.reshape(w, [w.shape[0], BK])


@triton.jit
def weight_tile(w_ptr, s_ptr, n, n_on, k0, IN: tl.constexpr, FMT: tl.constexpr,
                SB_O: tl.constexpr, SB_I: tl.constexpr, BK: tl.constexpr):  # fmt: skip
    """W[n, k0:k0+BK] -> [BN, BK] fp32 for output rows n [BN] of one [OUT, IN] matrix stored
    at w_ptr in a plain or the FP8 format (its scales at s_ptr); rows off n_on and inputs
    past IN give 0."""
    k = k0 + tl.arange(0, BK)
    on = n_on[:, None] & (k < IN)[None, :] if IN % BK else n_on[:, None]
    w = tl.load(w_ptr + n[:, None] * IN + k[None, :], mask=on, other=0.0).to(tl.float32)
    if FMT == "fp8":
        w = scaled(w, group_scales(s_ptr, n // SB_O, n_on, k0, IN, SB_I, BK), SB_I, BK)
    return w


@triton.jit
def fp4_words(w_ptr, s_ptr, n, n_on, k0, IN: tl.constexpr, SB_I: tl.constexpr,
              BK: tl.constexpr):  # fmt: skip
    """The FP4 tile W[n, k0:k0+BK] as it is stored: int32 words [BN, BK/8] (8 codes each,
    `e2m1_pairs`) and each word's factor [BN, BK/8]: 2^126 times its group's E8M0 scale
    2^(b - 127) as a bf16 pattern in both halves of an int32 (one packed multiplier). It is
    exact for scale bytes up to 128 (scales up to 2, weights up to 12; checkpoints' are far
    below)."""
    kw = k0 // 8 + tl.arange(0, BK // 8)
    on = n_on[:, None] & (kw < IN // 8)[None, :] if IN % BK else n_on[:, None]
    words = tl.load(w_ptr.to(tl.pointer_type(tl.int32)) + n[:, None] * (IN // 8) + kw[None, :],
                    mask=on, other=0)  # fmt: skip
    blocks = IN // SB_I
    if SB_I >= BK:
        b = tl.load(s_ptr + n[:, None] * blocks + k0 // SB_I, mask=n_on[:, None], other=127)
        b = tl.broadcast_to(b, [n.shape[0], BK // 8])
    else:
        g = k0 // SB_I + tl.arange(0, BK // SB_I)
        b = tl.load(s_ptr + n[:, None] * blocks + g[None, :],
                    mask=n_on[:, None] & (g < blocks)[None, :], other=127)  # fmt: skip
        b = tl.reshape(tl.broadcast_to(b[:, :, None], [n.shape[0], BK // SB_I, SB_I // 8]),
                       [n.shape[0], BK // 8])  # fmt: skip
    factor = (b.to(tl.int32) + 126) << 7  # bf16 2^(b - 1)
    return words, factor | (factor << 16)


@triton.jit
def tile_dot(acc, a, w_ptr, s_ptr, n, n_on, k0, IN: tl.constexpr, FMT: tl.constexpr,
             SB_O: tl.constexpr, SB_I: tl.constexpr, BK: tl.constexpr,
             PRECISION: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """acc [BM, BN] + a @ W[n, k0:k0+BK]^T for an activation tile a [BM, BK] (as `dot_operand`
    made it), in `dot_k16`'s fixed order (batch invariance under the interpreter too)."""
    if FMT == "fp4":
        words, factor = fp4_words(w_ptr, s_ptr, n, n_on, k0, IN, SB_I, BK)
        w = e2m1_tile(words, factor, UPCAST)
    else:
        w = weight_tile(w_ptr, s_ptr, n, n_on, k0, IN, FMT, SB_O, SB_I, BK)
    return dot_k16(a, tl.trans(dot_operand(w, UPCAST, PRECISION)), acc, UPCAST, PRECISION)


@triton.jit
def activation_tile(a_ptr, rows, row_on, k0, IN: tl.constexpr, BK: tl.constexpr,
                    ROUND: tl.constexpr):  # fmt: skip
    """A[rows, k0:k0+BK] -> [BM, BK] fp32 of a row-major [*, IN] activation (rows may
    gather); under ROUND (numerics: official) FP8-rounded as the official GEMM input is."""
    k = k0 + tl.arange(0, BK)
    on = row_on[:, None] & (k < IN)[None, :] if IN % BK else row_on[:, None]
    a = tl.load(a_ptr + rows[:, None] * IN + k[None, :], mask=on, other=0.0)
    a = a.to(tl.float32)
    if ROUND:
        a = fp8_round_rows(a)
    return a


@triton.jit
def linear_tile(a_ptr, rows, row_on, w_ptr, s_ptr, n0, k_lo, k_hi, OUT: tl.constexpr,
                IN: tl.constexpr, FMT: tl.constexpr, SB_O: tl.constexpr, SB_I: tl.constexpr,
                BN: tl.constexpr, BK: tl.constexpr, ROUND: tl.constexpr,
                PRECISION: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """A[rows, k_lo:k_hi] @ W[n0:n0+BN, k_lo:k_hi]^T -> [BM, BN] fp32, W one [OUT, IN] matrix;
    masked rows and outputs give 0. The sum starts from 0 and runs in steps of BK, in order."""
    n = n0 + tl.arange(0, BN)
    n_on = n < OUT
    rows = rows.to(tl.int64)
    acc = tl.zeros([rows.shape[0], BN], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BK):
        a = dot_operand(activation_tile(a_ptr, rows, row_on, k0, IN, BK, ROUND), UPCAST, PRECISION)
        acc = tile_dot(acc, a, w_ptr, s_ptr, n, n_on, k0, IN, FMT, SB_O, SB_I, BK, PRECISION,
                       UPCAST)  # fmt: skip
    return acc


@triton.jit
def gate_up_tile(a_ptr, rows, row_on, w1_ptr, s1_ptr, w3_ptr, s3_ptr, n0, k_lo, k_hi,
                 OUT: tl.constexpr, IN: tl.constexpr, FMT: tl.constexpr, SB_O: tl.constexpr,
                 SB_I: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, ROUND: tl.constexpr,
                 PRECISION: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """(A W1[n0:n0+BN]^T, A W3[n0:n0+BN]^T), each [BM, BN] fp32: `linear_tile` of the two
    matrices of one SwiGLU with each activation tile loaded (and rounded) once for both."""
    n = n0 + tl.arange(0, BN)
    n_on = n < OUT
    rows = rows.to(tl.int64)
    gate = tl.zeros([rows.shape[0], BN], dtype=tl.float32)
    up = tl.zeros([rows.shape[0], BN], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BK):
        a = dot_operand(activation_tile(a_ptr, rows, row_on, k0, IN, BK, ROUND), UPCAST, PRECISION)
        gate = tile_dot(gate, a, w1_ptr, s1_ptr, n, n_on, k0, IN, FMT, SB_O, SB_I, BK,
                        PRECISION, UPCAST)  # fmt: skip
        up = tile_dot(up, a, w3_ptr, s3_ptr, n, n_on, k0, IN, FMT, SB_O, SB_I, BK, PRECISION,
                      UPCAST)  # fmt: skip
    return gate, up


@triton.jit
def swiglu_rows(gate, up, LIMIT: tl.constexpr, ROUND: tl.constexpr, ROUND_TO: tl.constexpr):
    """silu(min(gate, LIMIT)) * clamp(up, -LIMIT, LIMIT) in fp32; LIMIT 0 means no clamp.
    Under ROUND the GEMM outputs gate and up are first rounded to ROUND_TO (the activation
    dtype), as the official GEMMs write them."""
    if ROUND:
        gate = round_to(gate, ROUND_TO)
        up = round_to(up, ROUND_TO)
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
