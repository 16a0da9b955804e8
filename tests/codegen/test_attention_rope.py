"""sparse_attention_rope (Triton): the sparse attention with the per-head q norm + RoPE on
the q it loads and the inverse RoPE on its output, against the op's reference semantics
(rms_norm_rope, sparse_attention, rope run one after the other) and, bit for bit, against
the three unfused kernels run one after the other.

The unfused kernels round where the fused one rounds (kernels/head_rope.py): the normalised
q in q's dtype before and after its rotation, the output in its dtype before and after the
rotation back; the norm's sum of squares is the same reduction over a head's row. So the
q the fused attention multiplies is the unfused one's bit for bit, and so is its output.
Dims: 4 heads of d 192 (not a power of two: the split form's q is loaded in two chunks of
128, the second masked, and its combine writes two column blocks), the last 64 rotated;
window 8, HCA ratio 16 over 6 entries or CSA with 8 picks of 12.
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from tests.codegen.test_attention import SLOTS, TOL, params, prefill_and_decodes, topk_picks
from v4c.ir.ops.rope import Rope
from v4c.ir.ops.attention import SparseAttentionRope
from v4c.ir.ops.norm import RmsNormRope

D, H, W, ROPE, THETA = 192, 4, 8, 64, 10000.0
YARN = (16.0, 65536, 32.0, 1.0)
CASES = [  # (ratio, (row starts, T)): a decode step, a verify step, a prefill longer than W
    (16, ((20, 60), 1)),
    (4, ((6, 45), 3)),
    (0, ((3, 10), 11)),
]


def inputs(ratio, starts, T, dtype, gen):
    """Fresh sparse-attention operands (the ring a clone each use: the call writes it)."""
    positions = torch.tensor(starts)[:, None] + torch.arange(T)  # [B, T]
    batch, rows = len(starts), len(SLOTS) + 1
    q = (3 * torch.randn(batch, T, H, D, generator=gen)).to(dtype)
    kv = (torch.randn(batch, T, D, generator=gen) / 4).to(dtype)
    sink = torch.randn(H, generator=gen)
    ring = (torch.randn(rows, W, D, generator=gen) / 4).to(dtype)
    ins = [q, kv, positions, SLOTS, sink, ring]
    if ratio:
        ins.append((torch.randn(rows, 12 if ratio == 4 else 6, D, generator=gen) / 4).to(dtype))
    if ratio == 4:
        ins.append(topk_picks(positions, 12, 8, gen))
    return ins


def unfused(op, ins, root, form):
    """The three launches fuse_attn_q and fuse_attn_o replace, each its own kernel."""
    q, positions = ins[0], ins[2]
    yarn = dict(yarn=op.yarn, theta=op.theta)
    if op.q_norm:
        norm = RmsNormRope(op.rope_dim, eps=op.eps, weighted=False, inline=op.inline, **yarn)
        (q,) = run_kernel(norm, [q, positions], root)
    attention = op._attention()
    rest = [q, *ins[1:]]
    (out,) = run_kernel(attention, rest, root, params(attention, rest, form))
    if op.o_rope:
        (out,) = run_kernel(Rope(op.rope_dim, inverse=True, **yarn), [out, positions], root)
    return out


BOTH = [(True, True, dtype, official, ratio, step, form)
        for dtype, official in [(torch.float32, False), (torch.bfloat16, False),
                                (torch.bfloat16, True)]
        for ratio, step in CASES for form in ("split", "prefill")]  # fmt: skip
ONE = [(q, not q, torch.bfloat16, True, *CASES[i], form)
       for q in (True, False) for i, form in ((0, "split"), (2, "prefill"))]  # fmt: skip


@pytest.mark.parametrize("q_norm, o_rope, dtype, official, ratio, step, form", BOTH + ONE)
def test_matches_unfused(q_norm, o_rope, dtype, official, ratio, step, form, kernel_cache):
    """Both folds in every form, dtype and numerics; each fold alone at decode and prefill."""
    folds = (q_norm, o_rope)
    gen = torch.Generator().manual_seed(ratio + step[1])
    yarn = YARN if ratio else None
    op = SparseAttentionRope(
        ROPE, 160000.0 if yarn else THETA, yarn, ratio=ratio, window=W, softmax_scale=D**-0.5,
        round_probs=official, q_norm=folds[0], inline=official, o_rope=folds[1],
    )  # fmt: skip
    ins = inputs(ratio, *step, dtype, gen)
    ring = ins[5]
    made = params(op, ins, form)
    assert (made.q_norm, made.o_rope, made.inline) == (*folds, official)
    fused_ring, unfused_ring, ref_ring = ring.clone(), ring.clone(), ring.clone()
    (got,) = run_kernel(op, [*ins[:5], fused_ring, *ins[6:]], kernel_cache, made)
    want = unfused(op, [*ins[:5], unfused_ring, *ins[6:]], kernel_cache, form)
    assert torch.equal(got, want) and torch.equal(fused_ring, unfused_ring)
    (ref,) = op.run([*ins[:5], ref_ring, *ins[6:]])
    torch.testing.assert_close(got, ref, **TOL[dtype])
    assert torch.equal(fused_ring, ref_ring)


def test_the_folds_are_on(kernel_cache):
    """The fused kernel is not the plain attention: without its folds (the same operands)
    it gives another output; with them, the plain attention of the normalised, rotated q,
    rotated back (the reference)."""
    gen = torch.Generator().manual_seed(5)
    ins = inputs(0, (3, 10), 1, torch.float32, gen)
    op = SparseAttentionRope(ROPE, THETA, window=W, softmax_scale=D**-0.5, q_norm=True,
                             o_rope=True)  # fmt: skip
    (got,) = run_kernel(op, [*ins[:5], ins[5].clone(), *ins[6:]], kernel_cache)
    plain = op._attention()
    (bare,) = run_kernel(plain, [*ins[:5], ins[5].clone(), *ins[6:]], kernel_cache)
    assert not torch.allclose(got, bare, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype, official", [(torch.float32, False), (torch.bfloat16, True)])
def test_prefill_is_decode_bit_for_bit(dtype, official, kernel_cache):
    """Both folds, CSA (24 picks of 40): each sampled token of a 20-token prefill chunk gets
    bit for bit its decode step's output (as the plain attention's test in
    tests/codegen/test_attention.py), plain fp32 in 3 slices, official bf16 in the default 2."""
    op = SparseAttentionRope(
        ROPE, 160000.0, YARN, ratio=4, window=W, softmax_scale=D**-0.5, round_probs=official,
        q_norm=True, inline=official, o_rope=True,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(7)
    for slices in (3,) if dtype == torch.float32 else (0,):
        chunk, decodes = prefill_and_decodes(op, dtype, 40, 24, slices, kernel_cache, gen, D)
        for t, got in decodes:
            assert torch.equal(got, chunk[:, t : t + 1]), (slices, t)
