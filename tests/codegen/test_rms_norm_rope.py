"""rms_norm_rope (Triton) against the fused op's reference semantics (RMSNorm then RoPE)."""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.ir.ops.fused import RmsNormRope

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
