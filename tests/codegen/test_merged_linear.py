"""The merged GEMM launch (`merged_linear`, Triton interpreter): the linears of one input in
one launch give bitwise the outputs of their own launches (each part keeps its tiles, runs and
weight mode, so its reduction order), with FP8 and bf16 parts side by side, at decode and
prefill row counts, plain and official numerics; and each part agrees with the reference
semantics within the tolerance of tests/codegen/test_gemm.py (bf16 out: 2^-7 |want| + the
fp32 reordering slack K * 2^-22 * |x| @ |w|ᵀ; fp32 out: the slack alone).
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from tests.codegen.test_gemm import bound, dense, weight
from v4c.codegen import jit
from v4c.codegen.params import describe
from v4c.ir.ops.gemm import Linear, MergedLinear

# (N, format, out dtype) of each part: an FP8 weight (act_quant under official numerics), a
# bf16 one narrower than a tile with fp32 out (a compressor's), a wider FP8 one
PARTS = [(96, "fp8", "bf16"), (40, "bf16", "fp32"), (160, "fp8", "bf16")]
ROWS = {"decode": (1, 1), "decode_batch": (3, 1), "prefill": (2, 37)}


def parts(k: int, official: bool) -> tuple[MergedLinear, list]:
    op = MergedLinear(
        tuple(d for _, _, d in PARTS), tuple(official and f == "fp8" for _, f, _ in PARTS)
    )
    return op, [weight(n, k, f, seed=i) for i, (n, f, _) in enumerate(PARTS)]


@pytest.mark.parametrize("official", [False, True], ids=["plain", "official"])
@pytest.mark.parametrize("bucket,k", [(b, 256) for b in ROWS] + [("decode_batch", 200)])
def test_merged_launch_is_bitwise_the_separate_launches(bucket, k, official, kernel_cache):
    op, ws = parts(k, official)
    x = torch.randn(*ROWS[bucket], k, generator=torch.Generator().manual_seed(7)).bfloat16()
    merged = run_kernel(op, [x, *ws], kernel_cache)
    for part, w, got in zip(op.parts(), ws, merged, strict=True):
        alone = run_kernel(part, [x, w], kernel_cache)[0]
        assert got.dtype == alone.dtype and torch.equal(got, alone)
        want = part.run([x, dense(w)])[0]
        slack, _ = bound(x, w, part, part.out_dtype == "fp32")
        tol = slack if part.out_dtype == "fp32" else 2.0**-7 * want.float().abs() + slack
        assert got.dtype == want.dtype and ((got.float() - want.float()).abs() <= tol).all()


def test_split_programs_share_the_scratch_and_leave_the_counters_at_zero(kernel_cache):
    """At decode every part here sums its K blocks in several programs: each part uses its own
    range of one scratch and one counter region, and leaves its counters at zero, so a second
    launch on the same scratch gives the same bits."""
    op, ws = parts(256, official=False)
    x = torch.randn(2, 1, 256, generator=torch.Generator().manual_seed(3)).bfloat16()
    shapes = [describe(t) for t in (x, *ws)]
    module = jit.load(jit.params_for(op.kind, op.attrs(), shapes), kernel_cache)
    assert all(p.split_ctas for p in jit.params_for(op.kind, op.attrs(), shapes).parts)
    scratch = torch.full((module.scratch_bytes(shapes),), 255, dtype=torch.uint8)
    counters = torch.zeros(module.counter_words(shapes), dtype=torch.int32)
    first = [t.clone() for t in module.run(x, *ws, scratch=scratch, counters=counters)]
    assert not counters.any()
    second = module.run(x, *ws, scratch=scratch, counters=counters)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not counters.any()
    alone = [run_kernel(Linear(d, False), [x, w], kernel_cache)[0] for (_, _, d), w in
             zip(PARTS, ws)]  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(first, alone, strict=True))
