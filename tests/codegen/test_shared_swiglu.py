"""The shared expert's SwiGLU takes h, its split partials and their counters from the bound
program's kernel scratch (runtime/scratch.py): the call allocates nothing, bytes left by an
earlier call are never read, the counters are back at zero after it, and the results are the
bits of a call that makes its own scratch (and the reference's within the tolerance).

The dims are chosen so that both reductions are cut in several ranges (asserted), which only
a decode tile (at most 16 rows) spreads over programs: the case that uses the partials."""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.codegen.params import describe
from v4c.ir.ops.moe import Swiglu

D, I = 256, 512
LIMIT = 10.0
# fp32 activations and weights: ieee dots, so only the summation order differs from the
# reference. The w2 sums here reach |h| |w2| summed ~3.1e3, one fp32 ulp of which is 2.4e-4:
# a reordering moves a result by a few of them, so atol 2e-3 (~8 ulps); rtol 1e-5.
TOL = dict(rtol=1e-5, atol=2e-3)


class NoAlloc:
    """The template's `torch`, with the allocating constructors refused."""

    def __getattr__(self, name):
        if name in ("empty", "zeros", "full", "empty_like", "zeros_like"):
            raise AssertionError(f"the call allocated (torch.{name})")
        return getattr(torch, name)


def operands(rows: int):
    gen = torch.Generator().manual_seed(11)
    x = 2 * torch.randn(1, rows, D, generator=gen)
    ws = [0.3 * torch.randn(*shape, generator=gen) for shape in ((I, D), (D, I), (I, D))]
    return [x, *ws]


def test_scratch_at_a_prefill_limit_holds_h_and_sixteen_rows_of_partials(kernel_cache):
    """Counted by hand: h is [rows, I] fp32 at the limit; only 16 rows (a decode tile) ever
    split, so the partials are reserved for 16 rows, not the limit's 2 x 1024."""
    shapes = [describe(t) for t in operands(3)]
    params = jit.params_for("swiglu", Swiglu(limit=LIMIT).attrs(), shapes)
    kernel = jit.load(params, kernel_cache)
    split_d, split_i = params.split_d, params.split_i
    limit = [((2, 1024, D), "fp32", None)]
    h = 2 * 1024 * I * 4
    assert kernel.scratch_bytes(limit) == h + 16 * 4 * max(split_d * I * 2, split_i * D)
    decode = [((2, 1, D), "fp32", None)]  # 2 rows: h, 256-aligned, then 2 rows of partials
    assert kernel.scratch_bytes(decode) == 4096 + 2 * 4 * max(split_d * I * 2, split_i * D)
    assert kernel.counter_words(limit) == kernel.counter_words(decode) == max(I, D) // 64


@pytest.mark.parametrize("rows", [3, 16, 18])  # decode tiles (split programs); prefill
def test_shared_swiglu_in_the_programs_scratch(rows, kernel_cache, monkeypatch):
    ins = operands(rows)
    op = Swiglu(limit=LIMIT)
    shapes = [describe(t) for t in ins]
    params = jit.params_for(op.kind, op.attrs(), shapes)
    assert params.split_d > 1 and params.split_i > 1
    kernel = jit.load(params, kernel_cache)
    limit = [((2, 24, D), "fp32", None), *shapes[1:]]  # the entry's limits: 48 rows
    scratch = torch.full((kernel.scratch_bytes(limit),), 255, dtype=torch.uint8)  # NaN floats
    counters = torch.zeros(kernel.counter_words(limit), dtype=torch.int32)
    own = run_kernel(op, ins, kernel_cache)[0]  # a call that makes its own scratch
    outs = [(torch.full_like(own, float("nan")),) for _ in range(2)]
    monkeypatch.setattr(kernel, "torch", NoAlloc())
    for out in outs:
        (got,) = kernel.run(*ins, out=out, scratch=scratch, counters=counters)
        assert got is out[0] and torch.equal(got, own)
        assert not counters.any()
    (want,) = op.run(ins)
    torch.testing.assert_close(own, want, **TOL)
