"""The batch-invariant product (ir/semantics/invariant.py), bitwise: a row alone, at every
position of a block, and inside M = 1..15 rows (three blocks and a part) give the same bits,
in fp32 and bf16, with 1 and 2 threads; and the values are x Wᵀ (against torch.mm, to fp32
reordering)."""

from __future__ import annotations

import pytest
import torch

from v4c.ir.semantics import invariant
from v4c.ir.semantics.invariant import ROWS, WIDE, RowBlocks, bmm, matmul

# (K, N): the tiny model's shapes (hidden 256, HC 4*256 -> 24, experts, the gate's 8) and a
# small odd one, and a wide one (a vocabulary: fp32 takes the transposed call)
SHAPES = [(256, 512), (1024, 24), (64, 8), (32, 33), (128, WIDE)]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k, n", SHAPES)
def test_rows_alone_equal_rows_in_any_batch(threads, dtype, k, n):
    gen = torch.Generator().manual_seed(k + n)
    w = torch.randn(n, k, generator=gen).to(dtype)
    x = torch.randn(3 * ROWS + 3, k, generator=gen).to(dtype)
    alone = torch.cat([matmul(row[None], w) for row in x])
    for m in range(1, len(x) + 1):
        assert torch.equal(matmul(x[:m], w), alone[:m]), m
    for start in range(1, ROWS):  # each row at every position of a block
        assert torch.equal(matmul(x[start:], w), alone[start:]), start


def test_values_are_the_product(threads):
    """fp32 against torch.mm: the same dot products, summed in the BLAS's order for the other
    shape, so they agree to fp32 reordering (K = 256 terms of O(1): ~1e-5 absolute)."""
    x, w = torch.randn(3, 5, 256), torch.randn(40, 256)
    torch.testing.assert_close(matmul(x, w), x @ w.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n, dtype", [(24, torch.bfloat16), (WIDE, torch.float32)])
def test_bound_blocks_equal_matmul(threads, n, dtype):
    """The bound form (the program's linear) writes what `matmul` returns, widening a bf16
    product to an fp32 result as the lm_head does, and through the transposed call for a
    wide fp32 weight; no rows give no rows, no K a zero product."""
    x, w = torch.randn(13, 64).to(dtype), torch.randn(n, 64).to(dtype)
    out = torch.empty(13, n)
    assert RowBlocks(64, n, dtype, x.device).wide == (n == WIDE)
    RowBlocks(64, n, dtype, x.device)(x, w, out)
    assert torch.equal(out, matmul(x, w).float())
    assert matmul(x[:0], w).shape == (0, n)
    assert torch.equal(matmul(x[:, :0], w[:, :0]), torch.zeros(13, n, dtype=dtype))  # K = 0


def test_bmm_groups():
    x, w = torch.randn(3, 2, 5, 16), torch.randn(3, 7, 16)
    out = bmm(x, w)
    for g in range(3):
        assert torch.equal(out[g], matmul(x[g], w[g]))


@pytest.mark.parametrize("name", ["sigmoid", "silu", "softplus"])
def test_elementwise_rows_alone_equal_rows_in_a_batch(name):
    """torch's own sigmoid/silu/softplus fail this (SIMD body vs scalar tail); the module's
    do not, and they are the functions (to a few fp32 ulps; softplus's switch at 20 kept)."""
    fn, ref = getattr(invariant, name), getattr(torch.nn.functional, name)
    edges = torch.tensor([[-90.0, -30, 19.9, 20.1, 30, 90, 0, -0.0]])  # saturation, the switch
    x = torch.cat((torch.randn(64, 8) * 4, edges))
    whole = fn(x)
    assert all(torch.equal(fn(row[None]), whole[i : i + 1]) for i, row in enumerate(x))
    torch.testing.assert_close(whole, ref(x), rtol=4e-7, atol=1e-30)
