"""The RoPE a sparse attention does around itself (`sparse_attention_rope`, V4_REFERENCE
§4.1, §8.3): the weightless per-head q RMSNorm + RoPE on the q tiles it loads, and the
inverse RoPE on its output tiles before they are stored.

Both round where the launches they replace round (`rms_norm_rope`'s kernels/norm.py
`norm_rope_row`, the `rope` template), so the q a fused attention multiplies and the output
it writes are, bit for bit, those launches' results: the normalised q in q's dtype before
the rotation and the rotated q again (on the bits under INLINE, the official q norm); the
output in its dtype before the rotation back, and after it (the store's cast).
"""

import triton
import triton.language as tl

from v4c.codegen.kernels.norm import row_scale
from v4c.codegen.kernels.quant import round_to
from v4c.codegen.kernels.rope import rotate_pairs, rotate_tile


@triton.jit
def q_scales(q_ptr, h0, eps, HEADS: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr,
             BLOCK: tl.constexpr, INLINE: tl.constexpr):  # fmt: skip
    """The norm scales [BLOCK_H] of heads h0.. of one token's q (q_ptr [HEADS, D]), each
    over its whole row (BLOCK >= D), one head at a time: what a program that loads q in
    chunks multiplies by. A head's row is one [BLOCK] reduction, as the unfused kernel's,
    and only one row is live at a time (a [BLOCK_H, BLOCK] tile of them spills)."""
    cols = tl.arange(0, BLOCK)
    lanes = tl.arange(0, BLOCK_H)
    r = tl.zeros([BLOCK_H], tl.float32)
    for i in range(BLOCK_H):  # a padding head (past HEADS) takes the last head's scale
        head = tl.minimum(h0 + i, HEADS - 1)
        x = tl.load(q_ptr + head * D + cols, mask=cols < D, other=0.0).to(tl.float32)
        r = tl.where(lanes == i, row_scale(x, D, eps, INLINE, q_ptr.dtype.element_ty, 0), r)
    return r


@triton.jit
def _round(y, INLINE: tl.constexpr, DTYPE: tl.constexpr):
    """y rounded to DTYPE and held in fp32: on the bits under INLINE, else the cast."""
    if INLINE:
        y = round_to(y, DTYPE)
    else:
        y = y.to(DTYPE).to(tl.float32)
    return y


@triton.jit
def normed_q(q, r, c, s, on, BLOCK_D: tl.constexpr, ROTATE: tl.constexpr,
             INLINE: tl.constexpr, DTYPE: tl.constexpr):  # fmt: skip
    """A q tile [BH, BLOCK_D] normalised by its heads' scales r [BH] and, if ROTATE, rotated
    by the angles (c, s, on) of its columns (kernels/rope.py `pair_angles`, made once before
    the loop that loads q: the sine's slow path at a loop's register peak spills): fp32
    holding DTYPE values."""
    y = _round(q.to(tl.float32) * r[:, None], INLINE, DTYPE)
    if ROTATE:
        y = _round(rotate_pairs(y, c, s, on, BLOCK_D, False), INLINE, DTYPE)
    return y


@triton.jit
def rotated_out(o, c0, pos, freqs_ptr, NOPE: tl.constexpr, PAIRS: tl.constexpr,
                BLOCK_D: tl.constexpr, DTYPE: tl.constexpr):  # fmt: skip
    """An fp32 output tile [BH, BLOCK_D] (columns c0..) of a token at `pos` rounded to
    DTYPE, as the attention would store it, and rotated back (inverse RoPE) in fp32, for
    the store's cast."""
    y = o.to(DTYPE).to(tl.float32)
    return rotate_tile(y, c0, pos, freqs_ptr, NOPE, PAIRS, BLOCK_D, True)
