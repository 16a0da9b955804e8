"""sparse_attention and grouped_linear (Triton) against the ops' reference semantics.

Small dims (d 64, 4 heads, window 8). A sparse-attention case is a few steps on one ring
buffer, the kernel and the reference each on its own copy, so later steps read what earlier
steps wrote; after every step the outputs must agree within the dtype's tolerance and the
ring buffers exactly (the write is a copy). Rows of a batch sit at different positions, and
the caches hold one row more than the step, whose rows are cache rows `SLOTS` (reversed, one
skipped): the kernel must find each row through `slots`, and leave the skipped row as it was.
Every case runs in both forms of the template: flash-decoding (the slices' programs, a scratch
and a combine: a decode step's form) and a program per token folding the same slices (a
prefill's); a token gets the same bits in both.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.codegen.ops.attention import FOLD_KEYS
from v4c.codegen.params import describe
from v4c.ir.ops.attention import SparseAttention
from v4c.ir.ops.gemm import GroupedLinear

D, H, W = 64, 4, 8
# fp32: the kernel and the reference sum the same <= 120 products in other orders (a few
# fp32 ulps of the largest term); bf16: the output is rounded to bf16 (2^-8 relative) and
# the probabilities to bf16 for p·v (2^-8 of each weight, so 2^-8 of max|v| ~ 4 absolute).
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}
DTYPES = [torch.float32, torch.bfloat16]
FORMS = ["split", "prefill"]
SLOTS = torch.tensor([2, 0])  # step rows 0, 1 -> cache rows 2, 0 of 3


def params(op, ins, form="split", slices=0):
    """The template's constants for `ins` in one form (split: into `slices`, 0 the default)."""
    made = jit.params_for(op.kind, op.attrs(), [describe(t) for t in ins])
    return made.form(form == "split", slices)


def topk_picks(positions, n_entries, k, gen):
    """[B, T, k] distinct visible entries (w < (pos+1)//4) in random slots, -1 elsewhere."""
    picks = torch.full((*positions.shape, k), -1, dtype=torch.long)
    for b, t in itertools.product(*map(range, positions.shape)):
        visible = min(n_entries, (int(positions[b, t]) + 1) // 4)
        chosen = torch.randperm(visible, generator=gen)[:k]
        slots = torch.randperm(k, generator=gen)[: len(chosen)]
        picks[b, t, slots] = chosen
    return picks


def run_steps(op, steps, dtype, kernel_cache, form, *, heads=H, sink=None, n_entries=0, topk=0):
    """Each step is (row starts, T): fresh q/kv at positions start..start+T-1, one call of
    the kernel (in `form`, or as many slices) and of the reference, outputs and ring buffers
    compared. Returns the last step's inputs (with the ring as it was before the step) and
    kernel output."""
    gen = torch.Generator().manual_seed(0)
    batch, rows = len(steps[0][0]), len(SLOTS) + 1
    sink = torch.randn(heads, generator=gen) if sink is None else sink
    ring = torch.randn(rows, W, D, generator=gen).to(dtype)  # what earlier steps left
    ring_ref, skipped = ring.clone(), ring[1].clone()
    compressed = torch.randn(rows, n_entries, D, generator=gen).to(dtype)
    for starts, T in steps:
        positions = torch.tensor(starts)[:, None] + torch.arange(T)  # [B, T]
        q = torch.randn(batch, T, heads, D, generator=gen).to(dtype)
        kv = torch.randn(batch, T, D, generator=gen).to(dtype)
        ins = [q, kv, positions, SLOTS, sink, ring]
        ins += [compressed] if op.ratio else []
        ins += [topk_picks(positions, n_entries, topk, gen)] if topk else []
        before = ring.clone()
        split = isinstance(form, int)
        made = params(op, ins, "split" if split else form, form if split else 0)
        (got,) = run_kernel(op, ins, kernel_cache, made)
        (want,) = op.run([*ins[:5], ring_ref, *ins[6:]])
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, **TOL[dtype])
        assert torch.equal(ring, ring_ref) and torch.equal(ring[1], skipped)
    return [*ins[:5], before, *ins[6:]], got


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_window_only(dtype, form, kernel_cache):
    op = SparseAttention(0, W, D**-0.5)
    steps = [
        ((2, 9), 1),  # decode below W (sees ring slots 0, 1) and above it (a full ring)
        ((3, 10), 11),  # prefill longer than W: windows span ring and step, writes wrap
        ((14, 21), 3),  # the ring now holds the tail of that prefill
    ]
    run_steps(op, steps, dtype, kernel_cache, form)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_hca_visible_entries(dtype, form, kernel_cache):
    """Ratio 16: query i sees entries w < (i+1)//16 of 6 stored; row 0 crosses from 0 to 1
    visible entry at position 15, row 1 from 2 to 3 at 47; the rest stay hidden."""
    op = SparseAttention(16, W, D**-0.5)
    run_steps(op, [((0, 40), 20), ((20, 60), 1)], dtype, kernel_cache, form, n_entries=6)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_csa_topk(dtype, form, kernel_cache):
    """Ratio 4, 8 picks of 12 entries: row 0 (positions 1..6) has fewer visible entries than
    picks (-1 padding, none at all at first), row 1 (40..45) more; -1 slots are scattered."""
    op = SparseAttention(4, W, D**-0.5)
    steps = [((1, 40), 5), ((6, 45), 1)]
    run_steps(op, steps, dtype, kernel_cache, form, n_entries=12, topk=8)


@pytest.mark.parametrize("form", FORMS)
def test_csa_topk_official(form, kernel_cache):
    """As test_csa_topk in bf16 with P rounded to bf16 (numerics: official): the kernel rounds
    against its block's or slice's max, the reference against the query's, each weight within
    2^-8 of the other's, so the outputs stay within TOL (2^-8 of max|v| ~ 4 is 0.016)."""
    op = SparseAttention(4, W, D**-0.5, round_probs=True)
    steps = [((1, 40), 5), ((6, 45), 1)]
    run_steps(op, steps, torch.bfloat16, kernel_cache, form, n_entries=12, topk=8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_slice_count(dtype, kernel_cache):
    """HCA with 100 entries: a query's list is 108 keys, cut into 1, 2, 3 and 7 slices (one
    block of 128, 64, 64, 16 keys each; the decode rows see 1 and 5 entries, so some slices
    hold no key at all). Each is within TOL of the reference, so two slice counts differ by
    at most twice TOL: the slices only move where the sums are split and rescaled."""
    op = SparseAttention(16, W, D**-0.5)
    outs = [
        run_steps(op, [((30, 83), 1)], dtype, kernel_cache, n, n_entries=100)[1]
        for n in (1, 2, 3, 7)
    ]
    twice = {k: 2 * v for k, v in TOL[dtype].items()}
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], **twice)


@pytest.mark.parametrize("form", FORMS)
def test_a_token_ignores_its_neighbours(form, kernel_cache):
    """Batch invariance: each row's output alone in a call is bit for bit its output beside
    the other row, and (split) a scratch that holds one token, so the call runs in passes,
    changes no bit either."""
    op = SparseAttention(4, W, D**-0.5)
    ins, got = run_steps(op, [((37, 61), 1)], torch.bfloat16, kernel_cache, form,
                         n_entries=12, topk=8)  # fmt: skip
    made = params(op, ins, form)
    for b in range(2):
        row = [ins[0][b : b + 1], ins[1][b : b + 1], ins[2][b : b + 1], ins[3][b : b + 1]]
        alone = [*row, ins[4], ins[5].clone(), ins[6], ins[7][b : b + 1]]
        assert torch.equal(run_kernel(op, alone, kernel_cache, made)[0], got[b : b + 1])
    if form == "split":
        module = jit.load(made, kernel_cache)
        one = torch.empty(module.PER_ROW, dtype=torch.float32)  # one token's partials
        again = module.run(*ins[:5], ins[5].clone(), *ins[6:], scratch=one)[0]
        assert torch.equal(again, got)


@pytest.mark.parametrize("slices", [0, 1, 3])
def test_verify_is_decode_bit_for_bit(slices, kernel_cache):
    """Flash-decoding: a verify step of 3 tokens a row gives each token bit for bit what 3
    decode steps give it, one token at a time (the ring then holds what the step's kv held:
    the same key bits in the same slices), with 20 heads (two head blocks) and the picks of
    CSA; the rings end the same too, and so does the verify step in passes of one token (a
    token's ring write never reaches a slot a later token of its row still reads)."""
    gen = torch.Generator().manual_seed(1)
    op, heads, dtype = SparseAttention(4, W, D**-0.5), 20, torch.bfloat16
    positions = torch.tensor([[30], [51]]) + torch.arange(3)  # [B, 3]
    q = torch.randn(2, 3, heads, D, generator=gen).to(dtype)
    kv = torch.randn(2, 3, D, generator=gen).to(dtype)
    sink = torch.randn(heads, generator=gen)
    ring = torch.randn(len(SLOTS) + 1, W, D, generator=gen).to(dtype)
    compressed = torch.randn(len(SLOTS) + 1, 12, D, generator=gen).to(dtype)
    picks = topk_picks(positions, 12, 8, gen)
    ins = [q, kv, positions, SLOTS, sink, ring.clone(), compressed, picks]
    made = params(op, ins, "split", slices)
    (verified,) = run_kernel(op, ins, kernel_cache, made)
    module, passes = jit.load(made, kernel_cache), ring.clone()
    single = torch.empty(module.PER_ROW, dtype=torch.float32)  # one token's partials
    (in_passes,) = module.run(*ins[:5], passes, *ins[6:], scratch=single)
    assert torch.equal(in_passes, verified) and torch.equal(passes, ins[5])
    stepped = ring.clone()
    for t in range(3):
        one = [q[:, t : t + 1], kv[:, t : t + 1], positions[:, t : t + 1], SLOTS, sink, stepped,
               compressed, picks[:, t : t + 1]]  # fmt: skip
        (got,) = run_kernel(op, one, kernel_cache, made)
        assert torch.equal(got, verified[:, t : t + 1])
    assert torch.equal(stepped, ins[5])


def prefill_and_decodes(op, dtype, n_entries, topk, slices, kernel_cache, gen, dim=D):
    """A prefill chunk of 20 tokens a row (the prefill form) and, for a few of its tokens, a
    decode step of that token alone (the split form) on the ring as the chunk's earlier
    tokens left it (written here by copy: the ring holds what the chunk's kv held). Returns
    (the chunk's output, [(t, that decode step's output)]); the ring the last decode step
    leaves is compared with the chunk's. `dim`: the head dim."""
    T = 20
    positions = torch.tensor([[3], [400]]) + torch.arange(T)  # row 0 starts below W
    q = torch.randn(2, T, H, dim, generator=gen).to(dtype)
    kv = torch.randn(2, T, dim, generator=gen).to(dtype)
    sink = torch.randn(H, generator=gen)
    ring = torch.randn(len(SLOTS) + 1, W, dim, generator=gen).to(dtype)
    rest = (
        [torch.randn(len(SLOTS) + 1, n_entries, dim, generator=gen).to(dtype)] if op.ratio else []
    )
    picks = topk_picks(positions, n_entries, topk, gen) if topk else None
    ins = [q, kv, positions, SLOTS, sink, ring.clone(), *rest] + ([picks] if topk else [])
    made = params(op, ins, "prefill", slices)
    assert not made.split
    (chunk,) = run_kernel(op, ins, kernel_cache, made)
    decodes = []
    for t in (0, 5, 13, 19):  # the window in the ring only, across ring and chunk, and both
        before = ring.clone()
        for b, slot in enumerate(SLOTS.tolist()):
            for i in range(t):
                before[slot, int(positions[b, i]) % W] = kv[b, i]
        one = [q[:, t : t + 1], kv[:, t : t + 1], positions[:, t : t + 1], SLOTS, sink, before,
               *rest] + ([picks[:, t : t + 1]] if topk else [])  # fmt: skip
        step = params(op, one, "split", slices)
        assert step.split and step.slices == made.slices
        decodes.append((t, run_kernel(op, one, kernel_cache, step)[0]))
        if t == T - 1:  # the decode step wrote the last token: the ring the chunk left
            assert torch.equal(before, ins[5])
    return chunk, decodes


@pytest.mark.parametrize("dtype, official", [(torch.float32, False), (torch.bfloat16, True)])
@pytest.mark.parametrize("ratio", [0, 4, 16])
def test_prefill_is_decode_bit_for_bit(ratio, dtype, official, kernel_cache):
    """Each sampled token of a 20-token prefill chunk gets bit for bit what a decode step of
    it alone gives (the same cache state), window-only, CSA (24 picks of 40) and HCA (ratio
    16, 30 entries: row 0 sees 0 or 1, its last slices none, which its prefill program
    skips; row 1 at position 400 sees 25 or 26), plain fp32 and official bf16 (P rounded to
    bf16), plain in 3 slices, official in the default count (CSA 2, HCA 3). A prefill that
    folded the list in one online softmax (large tiles, as this template did once) differs
    here by 1-2 fp32 ulps, and official by a bf16 step."""
    gen = torch.Generator().manual_seed(ratio + official)
    op = SparseAttention(ratio, W, D**-0.5, round_probs=official)
    n_entries, topk = {0: (0, 0), 4: (40, 24), 16: (30, 0)}[ratio]
    for slices in (3,) if dtype == torch.float32 else (0,):
        chunk, decodes = prefill_and_decodes(op, dtype, n_entries, topk, slices, kernel_cache, gen)
        for t, got in decodes:
            assert torch.equal(got, chunk[:, t : t + 1]), (slices, t)


@pytest.mark.parametrize("form", FORMS)
def test_sink(form, kernel_cache):
    """20 heads (two head blocks): a sink of -30 leaves head 0 a plain softmax, one of +30
    drives head 19 to ~0, the random ones in between change the output."""
    op = SparseAttention(0, W, D**-0.5)
    sink = torch.randn(20)
    sink[0], sink[19] = -30.0, 30.0
    ins, got = run_steps(op, [((3, 12), 1)], torch.float32, kernel_cache, form, heads=20, sink=sink)
    plain_ins = [*ins[:4], torch.full((20,), float("-inf")), ins[5]]
    plain = run_kernel(op, plain_ins, kernel_cache, params(op, plain_ins, form))[0]
    assert got[:, :, 19].abs().max() < 1e-9
    torch.testing.assert_close(got[:, :, 0], plain[:, :, 0], **TOL[torch.float32])
    assert not torch.allclose(got[:, :, 1:19], plain[:, :, 1:19], rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("form", FORMS)
def test_official_probabilities_in_bf16(form, kernel_cache):
    """numerics: official rounds P to bf16 for P·V (the sum stays fp32). One head of dim 2,
    q = (0, -0.53125); keys (1, 0) (this step) and (0, 1) (the ring): P = (1, e^-0.53125), the
    output's second dim e^-c / (1 + e^-c) = 0.37023 plain, bf16(e^-c) / (1 + e^-c) = 0.36901
    official: bf16 values a bf16 step apart, each within TOL of its reference."""
    bf16 = torch.bfloat16
    ring = torch.zeros(1, 4, 2, dtype=bf16)
    ring[0, 0] = torch.tensor([0.0, 1.0])  # position 0 in slot 0
    q = torch.tensor([[[[0.0, -0.53125]]]], dtype=bf16)
    ins = [q, torch.tensor([[[1.0, 0.0]]], dtype=bf16), torch.tensor([[1]]), torch.tensor([0]),
           torch.tensor([-float("inf")]), ring]  # fmt: skip
    outs = []
    for official in (True, False):
        op = SparseAttention(0, 4, 1.0, round_probs=official)
        made = params(op, ins, form)
        assert made.round_probs == official
        (got,) = run_kernel(op, [*ins[:5], ring.clone()], kernel_cache, made)
        (want,) = op.run([*ins[:5], ring.clone()])
        torch.testing.assert_close(got, want, **TOL[bf16])
        outs.append(got.flatten()[1].item())
    assert outs[0] < outs[1]  # the rounding is on: 0.36901 and 0.37023 in bf16


def test_flash_decode_fills_the_gpu():
    """V4-Flash at batch 1: a decode step's CSA query (128 window keys + 512 picks) runs as
    40 slices x 4 blocks of 16 heads = 160 programs (an H200 has 132 SMs), its HCA query at
    a 4k context (the cache holds 32 entries) as 10 x 4, a window-only query as 8 x 4; a
    prefill of the same layer folds the same 40 slices in a program per (token, 16 heads),
    but at a 1M context an HCA slice holds 128 keys, past what a prefill program folds in
    registers (FOLD_KEYS), and its prefill runs the split form."""
    q, kv, ring = ((1, 1, 64, 512), "bf16"), ((1, 1, 512), "bf16"), ((1, 128, 512), "bf16")
    rest = [((1, 1), "i64"), ((1,), "i64"), ((64,), "fp32"), ring]
    csa = [q, kv, *rest, ((1, 4096 // 4, 512), "bf16"), ((1, 1, 512), "i64")]
    attrs = {"window": 128, "softmax_scale": 512**-0.5}
    made = jit.params_for("sparse_attention", {**attrs, "ratio": 4}, csa)
    assert (made.split, made.slices, made.block_h, made.block_n) == (True, 40, 16, 16)
    hca = [q, kv, *rest, ((1, 4096 // 128, 512), "bf16")]
    assert jit.params_for("sparse_attention", {**attrs, "ratio": 128}, hca).slices == 10
    assert jit.params_for("sparse_attention", {**attrs, "ratio": 0}, [q, kv, *rest]).slices == 8
    prefill = [((1, 1024, 64, 512), "bf16"), ((1, 1024, 512), "bf16"), *csa[2:]]
    folded = jit.params_for("sparse_attention", {**attrs, "ratio": 4}, prefill)
    assert folded == made.model_copy(update=dict(split=False, num_warps=8))
    long = [*prefill[:-2], ((1, (1 << 20) // 128, 512), "bf16")]
    made = jit.params_for("sparse_attention", {**attrs, "ratio": 128}, long)
    assert (made.split, made.block_n) == (True, 128) and made.block_n > FOLD_KEYS


@pytest.mark.parametrize(
    "o_dtype, w_dtype",
    [(torch.float32,) * 2, (torch.bfloat16,) * 2, (torch.bfloat16, torch.float32)],
)
@pytest.mark.parametrize(
    "shape, groups, rank",
    [
        ((3, 7, 4, 24), 2, 20),  # 21 tokens > one block; 48 inputs, 20 outputs a group: masked
        ((1, 2, 4, 64), 4, 32),  # one head a group
    ],
)
def test_grouped_linear(shape, groups, rank, o_dtype, w_dtype, kernel_cache):
    gen = torch.Generator().manual_seed(0)
    o = torch.randn(shape, generator=gen).to(o_dtype)
    width = shape[2] * shape[3] // groups  # H*d/G
    weight = (torch.randn(groups * rank, width, generator=gen) / 8).to(w_dtype)
    op = GroupedLinear(groups)
    (got,) = run_kernel(op, [o, weight], kernel_cache)
    (want,) = op.run([o, weight])
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, **TOL[o_dtype])
