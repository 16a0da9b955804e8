"""sparse_attention and grouped_linear (Triton) against the ops' reference semantics.

Small dims (d 64, 4 heads, window 8). A sparse-attention case is a few steps on one ring
buffer, the kernel and the reference each on its own copy, so later steps read what earlier
steps wrote; after every step the outputs must agree within the dtype's tolerance and the
ring buffers exactly (the write is a copy). Rows of a batch sit at different positions, and
the caches hold one row more than the step, whose rows are cache rows `SLOTS` (reversed, one
skipped): the kernel must find each row through `slots`, and leave the skipped row as it was.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.ir.ops.attention import GroupedLinear, SparseAttention

D, H, W = 64, 4, 8
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}
DTYPES = [torch.float32, torch.bfloat16]
SLOTS = torch.tensor([2, 0])  # step rows 0, 1 -> cache rows 2, 0 of 3


def topk_picks(positions, n_entries, k, gen):
    """[B, T, k] distinct visible entries (w < (pos+1)//4) in random slots, -1 elsewhere."""
    picks = torch.full((*positions.shape, k), -1, dtype=torch.long)
    for b, t in itertools.product(*map(range, positions.shape)):
        visible = min(n_entries, (int(positions[b, t]) + 1) // 4)
        chosen = torch.randperm(visible, generator=gen)[:k]
        slots = torch.randperm(k, generator=gen)[: len(chosen)]
        picks[b, t, slots] = chosen
    return picks


def run_steps(op, steps, dtype, kernel_cache, *, heads=H, sink=None, n_entries=0, topk=0):
    """Each step is (row starts, T): fresh q/kv at positions start..start+T-1, one call of
    the kernel and of the reference, outputs and ring buffers compared. Returns the last
    step's inputs (with the ring as it was before the step) and kernel output."""
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
        (got,) = run_kernel(op, ins, kernel_cache)
        (want,) = op.run([*ins[:5], ring_ref, *ins[6:]])
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, **TOL[dtype])
        assert torch.equal(ring, ring_ref) and torch.equal(ring[1], skipped)
    return [*ins[:5], before, *ins[6:]], got


@pytest.mark.parametrize("dtype", DTYPES)
def test_window_only(dtype, kernel_cache):
    op = SparseAttention(0, W, D**-0.5)
    steps = [
        ((2, 9), 1),  # decode below W (sees ring slots 0, 1) and above it (a full ring)
        ((3, 10), 11),  # prefill longer than W: windows span ring and step, writes wrap
        ((14, 21), 3),  # the ring now holds the tail of that prefill
    ]
    run_steps(op, steps, dtype, kernel_cache)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hca_visible_entries(dtype, kernel_cache):
    """Ratio 16: query i sees entries w < (i+1)//16 of 6 stored; row 0 crosses from 0 to 1
    visible entry at position 15, row 1 from 2 to 3 at 47; the rest stay hidden."""
    op = SparseAttention(16, W, D**-0.5)
    run_steps(op, [((0, 40), 20), ((20, 60), 1)], dtype, kernel_cache, n_entries=6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_csa_topk(dtype, kernel_cache):
    """Ratio 4, 8 picks of 12 entries: row 0 (positions 1..6) has fewer visible entries than
    picks (-1 padding, none at all at first), row 1 (40..45) more; -1 slots are scattered."""
    op = SparseAttention(4, W, D**-0.5)
    run_steps(op, [((1, 40), 5), ((6, 45), 1)], dtype, kernel_cache, n_entries=12, topk=8)


def test_sink(kernel_cache):
    """20 heads (two head blocks): a sink of -30 leaves head 0 a plain softmax, one of +30
    drives head 19 to ~0, the random ones in between change the output."""
    op = SparseAttention(0, W, D**-0.5)
    sink = torch.randn(20)
    sink[0], sink[19] = -30.0, 30.0
    ins, got = run_steps(op, [((3, 12), 1)], torch.float32, kernel_cache, heads=20, sink=sink)
    plain = run_kernel(op, [*ins[:4], torch.full((20,), float("-inf")), ins[5]], kernel_cache)[0]
    assert got[:, :, 19].abs().max() < 1e-9
    torch.testing.assert_close(got[:, :, 0], plain[:, :, 0], **TOL[torch.float32])
    assert not torch.allclose(got[:, :, 1:19], plain[:, :, 1:19], rtol=1e-2, atol=1e-2)


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
