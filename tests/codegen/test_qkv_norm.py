"""qkv_norm (Triton) against the fused op's reference semantics: the q latent's RMSNorm and
the kv RMSNorm + RoPE, each as its unfused op computes it. Tolerances as test_rms_norm_rope's:
fp32 1e-5 (the kernel's row sums in another order); bf16 one ulp (2^-8) of a rounding."""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.ir.ops.norm import QkvNorm

YARN = (16.0, 65536, 32.0, 1.0)
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "q_dim, kv_dim, rope_dim, yarn",
    [(128, 96, 32, None), (64, 128, 64, YARN)],  # a width that is not a power of two; all rotated
)
def test_matches_reference(q_dim, kv_dim, rope_dim, yarn, dtype, kernel_cache):
    gen = torch.Generator().manual_seed(0)
    b, t = 2, 3
    ins = [
        torch.randn(b, t, q_dim, generator=gen).to(dtype),
        torch.randn(b, t, kv_dim, generator=gen).to(dtype),
        torch.randint(0, 70000, (b, t), generator=gen),
        (1 + 0.1 * torch.randn(q_dim, generator=gen)).to(dtype),
        (1 + 0.1 * torch.randn(kv_dim, generator=gen)).to(dtype),
    ]
    op = QkvNorm(rope_dim, 160000.0 if yarn else 10000.0, yarn, q_eps=1e-6, kv_eps=1e-5)
    got, want = run_kernel(op, ins, kernel_cache), op.run(ins)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, **TOL[dtype])
