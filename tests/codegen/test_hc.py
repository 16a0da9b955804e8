"""The hyper-connection templates (Triton) against the ops' reference semantics (mHC, §3).

Tokens come in B=2 rows of T=3; n=4 streams over D=96 (two D-blocks, the second partial) or
D=256 (four full blocks), and one n=3 case whose padded stream and comb lanes must stay 0.
Tolerances: fp32 streams 1e-5; bf16 streams 1.6e-2 relative (a rounding of the bf16
X' or collapsed row may land one ulp apart, which also moves the fp32 post/comb slightly).
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.ir.ops.core import HcHead, HcPost, HcPre
from v4c.ir.ops.fused import HcPostHeadNorm, HcPostPreNorm, HcPreNorm

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}
B, T = 2, 3


def operands(op, n: int, d: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """Random operands in the op's role order; HC parameters fp32 as in the checkpoint."""
    gen = torch.Generator().manual_seed(0)
    rows = n if "head" in op.kind else (2 + n) * n
    made = {
        "a": torch.randn(B, T, d, generator=gen).to(dtype),
        "X": torch.randn(B, T, n, d, generator=gen).to(dtype),
        "post": 2 * torch.rand(B, T, n, generator=gen),
        "comb": torch.rand(B, T, n, n, generator=gen).softmax(-1),
        "fn": 0.2 * torch.randn(rows, n * d, generator=gen),  # logits of order 1
        "base": torch.randn(rows, generator=gen),
        "scale": 0.5 + torch.rand(1 if rows == n else 3, generator=gen),
        "norm": 1 + 0.1 * torch.randn(d, generator=gen),
    }
    return [made[role] for role in op.operand_roles()]


def check(op, ins: list[torch.Tensor], dtype: torch.dtype, root) -> None:
    got = run_kernel(op, ins, root)
    want = op.run(ins)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, **TOL[dtype])


STREAMS = [HcPre, HcPreNorm, HcPostPreNorm, HcHead, HcPostHeadNorm]


@pytest.mark.parametrize("cls", STREAMS, ids=lambda c: c.kind)
@pytest.mark.parametrize(
    "d, dtype, iters",
    [
        (96, torch.float32, 20),  # the official 20 Sinkhorn rounds, a partial last D-block
        (256, torch.bfloat16, 1),  # softmax + one column step only; bf16 streams
    ],
)
def test_streams_kernels(cls, d, dtype, iters, kernel_cache):
    eps = dict(eps=1e-6, norm_eps=1e-6)
    op = cls(**eps) if cls is HcHead else cls(iters=iters, **eps)
    check(op, operands(op, 4, d, dtype), dtype, kernel_cache)


@pytest.mark.parametrize("cls", [HcPre, HcPostPreNorm], ids=lambda c: c.kind)
def test_three_streams(cls, kernel_cache):
    """n=3 pads to 4 lanes: the padded row and column of comb must not leak into Sinkhorn."""
    op = cls(iters=20)
    check(op, operands(op, 3, 96, torch.float32), torch.float32, kernel_cache)


@pytest.mark.parametrize("d, dtype", [(96, torch.float32), (256, torch.bfloat16)])
def test_hc_post(d, dtype, kernel_cache):
    op = HcPost()
    check(op, operands(op, 4, d, dtype), dtype, kernel_cache)
