"""rms_norm_rope (Triton) against the fused op's reference semantics (RMSNorm then RoPE)."""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.ir.ops.norm import RmsNormRope

YARN = (16.0, 65536, 32.0, 1.0)
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape, weighted, rope_dim, yarn",
    [
        ((2, 3, 4, 128), False, 64, None),  # per-head q norm, 4 heads
        ((2, 5, 128), True, 64, YARN),  # kv norm, compressed layer
        ((1, 3, 96), True, 32, None),  # a dim that is not a power of two
        ((1, 2, 64), True, 64, YARN),  # RoPE on every channel
    ],
)
def test_matches_reference(shape, weighted, rope_dim, yarn, dtype, kernel_cache):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(dtype)
    positions = torch.randint(0, 70000, shape[:2], generator=gen)
    op = RmsNormRope(rope_dim, 160000.0 if yarn else 10000.0, yarn, eps=1e-6, weighted=weighted)
    ins = [x, positions] + (
        [1 + 0.1 * torch.randn(shape[-1], generator=gen).to(dtype)] if weighted else []
    )
    (got,) = run_kernel(op, ins, kernel_cache)
    (want,) = op.run(ins)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape, rope_dim, yarn",
    [((2, 3, 4, 128), 64, None), ((1, 2, 3, 96), 32, YARN)],  # q heads; a dim not a power of 2
)
def test_official_q_norm_is_bitwise(shape, rope_dim, yarn, dtype, kernel_cache):
    """`inline` (numerics official): the weightless q norm op by op in q's dtype, then RoPE.
    In bf16 every rounding is the reference's (on the bits), so the result is bit for bit
    its own, and differs from the fp32 norm's (the roundings are on); in fp32 nothing rounds
    and only the order of the mean's sum differs (TOL)."""
    gen = torch.Generator().manual_seed(1)
    x = (3 * torch.randn(shape, generator=gen)).to(dtype)
    positions = torch.randint(0, 70000, shape[:2], generator=gen)
    theta = 160000.0 if yarn else 10000.0
    op = RmsNormRope(rope_dim, theta, yarn, eps=1e-6, weighted=False, inline=True)
    (got,) = run_kernel(op, [x, positions], kernel_cache)
    (want,) = op.run([x, positions])
    assert got.dtype == want.dtype
    exact = dict(rtol=0, atol=0) if dtype == torch.bfloat16 else TOL[dtype]
    torch.testing.assert_close(got, want, **exact)
    (plain,) = RmsNormRope(rope_dim, theta, yarn, eps=1e-6, weighted=False).run([x, positions])
    assert torch.equal(plain, want) == (dtype == torch.float32)
