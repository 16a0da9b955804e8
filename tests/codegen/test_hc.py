"""The hyper-connection templates (Triton) against the ops' reference semantics (mHC, §3).

Tokens come in B=2 rows of T=3; n=4 streams over D=96 (six D-blocks of 16: six splits) or
D=256 (sixteen blocks), and one n=3 case whose padded stream and comb lanes must stay 0.
Tolerances: fp32 streams 1e-5 (the kernel sums the n*D <= 1024 products of a logit in another
order than torch: a random walk of ~sqrt(1024) roundings of 2^-24 relative, ~2e-6, which the
sigmoid gates and the Sinkhorn normalisations do not amplify); bf16 streams 1.6e-2 relative
(a rounding of the bf16 X' or collapsed row may land one ulp, 2^-8, apart, which also moves
the fp32 post/comb slightly). The split count S only reorders the same fp32 sums, so the
results of S = 1, 2, 7 agree within the fp32 tolerance too.
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.codegen.params import describe
from v4c.ir.ops.hc import HcHead, HcPost, HcPostHeadNorm, HcPostPreNorm, HcPre, HcPreNorm
from v4c.ir.ops.moe import MoeCombine

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}
B, T = 2, 3


def operands(op, n: int, d: int, dtype: torch.dtype, b: int = B, t: int = T) -> list[torch.Tensor]:
    """Random operands in the op's role order; HC parameters fp32 as in the checkpoint."""
    B, T = b, t
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
        # the MoE combine before an hc_post (`moe`): K = 3 expert rows a token, sorted anyhow
        "y_sorted": torch.randn(B, T, 3, d, generator=gen).to(dtype),
        "rows": torch.randperm(B * T * 3, generator=gen).view(B, T, 3),
        "shared": torch.randn(B, T, d, generator=gen).to(dtype),
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


@pytest.mark.parametrize("cls", [HcPostPreNorm, HcPostHeadNorm], ids=lambda c: c.kind)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_moe_combine_in_the_post(cls, dtype, kernel_cache):
    """`moe`: the kernel sums the MoE combine's rows itself. Bitwise the two launches it
    replaces (moe_combine with rows, then the kind with `a`): the same fp32 sum in pick order
    and the same rounding of `a`; fp32 against the reference too (bf16: the interpreter
    rounds `a` toward zero, torch to nearest, an ulp of `a` that post then scales by up to 2,
    past the one-ulp bf16 tolerance; the two-launch chain is checked there by the tests of
    each launch)."""
    op = cls(moe=True, iters=20)
    ins = operands(op, 4, 96, dtype)
    if dtype == torch.float32:
        check(op, ins, dtype, kernel_cache)
    (a,) = run_kernel(MoeCombine(with_shared=True, rows=True), ins[:3], kernel_cache)
    apart = run_kernel(cls(iters=20), [a, *ins[3:]], kernel_cache)
    for g, w in zip(run_kernel(op, ins, kernel_cache), apart):
        assert torch.equal(g, w)


@pytest.mark.parametrize("d, dtype", [(96, torch.float32), (256, torch.bfloat16)])
def test_hc_post(d, dtype, kernel_cache):
    op = HcPost()
    check(op, operands(op, 4, d, dtype), dtype, kernel_cache)


def split_params(op, ins: list[torch.Tensor], splits: int):
    """The kernel's parameters for `ins` with the split count forced to `splits`."""
    params = jit.params_for(op.kind, op.attrs(), [describe(t) for t in ins])
    return params.model_copy(update={"splits": splits})


@pytest.mark.parametrize("cls", STREAMS, ids=lambda c: c.kind)
def test_split_counts(cls, kernel_cache):
    """S = 1 (one program projects all 16 D-blocks), 2 and 7 (splits 0 and 1 take three
    blocks, 0, 7, 14 and 1, 8, 15, the others two): each against the reference, and the three
    against each other."""
    op = cls(eps=1e-6, norm_eps=1e-6) if cls is HcHead else cls(iters=20)
    ins = operands(op, 4, 256, torch.float32)
    want = op.run(ins)
    runs = [run_kernel(op, ins, kernel_cache, split_params(op, ins, s)) for s in (1, 2, 7)]
    for got in runs:
        for g, w, first in zip(got, want, runs[0]):
            torch.testing.assert_close(g, w, **TOL[torch.float32])
            torch.testing.assert_close(g, first, **TOL[torch.float32])


def nan_like(results: tuple) -> tuple:
    return tuple(torch.full_like(r, float("nan")) for r in results)


@pytest.mark.parametrize("cls", [HcPostPreNorm, HcHead], ids=lambda c: c.kind)
def test_token_count_invariance(cls, kernel_cache):
    """A token's results are bitwise the same whatever the call's token count: token 17 (in the
    second block of 16 tokens) alone, among 4 and among all 20; and a second launch into
    NaN-filled buffers gives the first one's bits (each launch leaves its counters at 0)."""
    op = cls(eps=1e-6, norm_eps=1e-6) if cls is HcHead else cls(iters=20)
    ins = operands(op, 4, 96, torch.bfloat16, b=1, t=20)
    kernel = jit.load(split_params(op, ins, 2), kernel_cache)
    shapes = [(tuple(t.shape), "bf16") for t in ins]
    scratch = torch.empty(kernel.scratch_bytes(shapes), dtype=torch.uint8)
    counters = torch.zeros(kernel.counter_words(shapes), dtype=torch.int32)
    every = kernel.run(*ins, scratch=scratch, counters=counters)
    again = kernel.run(*ins, out=nan_like(every), scratch=scratch.fill_(255), counters=counters)
    for a, b in zip(every, again):
        assert torch.equal(a, b)
    assert counters.shape == (2,) and not counters.any()
    for lo, hi in ((17, 18), (15, 19)):
        per_token = ("a", "X", "post", "comb")
        part = [t[:, lo:hi] if r in per_token else t for r, t in zip(op.operand_roles(), ins)]
        got = kernel.run(*part)
        for g, e in zip(got, every):
            assert torch.equal(g, e[:, lo:hi])


def test_flash_decode_fills_the_gpu():
    """Flash dims (n = 4, D = 4096): 132 splits (one per H100 SM) of the 256 D-blocks of 16
    columns, so a decode step of one token runs 132 programs; the count is D's alone (the same
    for 1 or 1000 tokens)."""
    shapes = {"X": ((1, 1, 4, 4096), "bf16"), "fn": ((24, 4 * 4096), "fp32")}
    op = HcPre(iters=20)
    ins = [shapes.get(role, ((1,), "fp32")) for role in op.operand_roles()]
    params = jit.params_for(op.kind, op.attrs(), ins)
    assert (params.splits, params.block_d, params.block_t) == (132, 16, 16)
    assert params.splits * -(-1 // params.block_t) == 132
