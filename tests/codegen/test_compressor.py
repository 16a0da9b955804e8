"""compressor (Triton) against the op's reference, step after step on the same state and cache.

Each schedule drives two rows that start at different positions through a prefill that ends
inside a window, decode steps that cross window boundaries, a chunk that starts mid-window and
a step that completes several entries; after every step the state must equal the reference's
(the same fp32 values, layout included) and the cache must match within the dtype's tolerance.
State and cache hold one row more than the step, whose rows are cache rows `slots` (a
permutation with one row skipped): the skipped row must stay exactly as it was.
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.ir.ops.attention import Compressor
from v4c.spec.schema import coff

DIM, WIDTH, ROPE = 64, 32, 8
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}
YARN = (4.0, 64, 32.0, 1.0)


@pytest.mark.parametrize(
    "ratio, dtype, starts, steps",
    [
        (4, torch.float32, (0, 3), (6, 1, 1, 1, 5, 9)),  # overlapping windows (CSA)
        (4, torch.bfloat16, (2, 9), (3, 1, 1, 7)),  # bf16 activations and cache
        (16, torch.float32, (0, 13), (13, 1, 1, 1, 1, 20, 35)),  # one window per entry (HCA)
    ],
)
def test_matches_reference_step_by_step(ratio, dtype, starts, steps, kernel_cache):
    gen = torch.Generator().manual_seed(ratio)
    f = coff(ratio)
    op = Compressor(ROPE, 10000.0, YARN if ratio == 4 else None, ratio=ratio, eps=1e-6)
    weights = [0.2 * torch.randn(f * WIDTH, DIM, generator=gen).to(dtype) for _ in range(2)]
    ape = torch.randn(ratio, f * WIDTH, generator=gen)
    norm = (1 + 0.1 * torch.randn(WIDTH, generator=gen)).to(dtype)
    rows, entries = len(starts), (max(starts) + sum(steps)) // ratio + 1
    slots = torch.tensor([2, 0])  # step rows 0, 1 -> cache rows 2, 0 of 3; row 1 is skipped
    shape = (rows + 1, f * ratio, f * WIDTH)
    state = [torch.zeros(shape), torch.full(shape, float("-inf"))]  # state_kv, state_score
    cache = torch.randn(rows + 1, entries, WIDTH, generator=gen).to(dtype)  # earlier entries
    mine, ref = [s.clone() for s in (*state, cache)], [s.clone() for s in (*state, cache)]
    skipped = [s[1].clone() for s in mine]
    done = 0
    for tokens in steps:
        x = torch.randn(rows, tokens, DIM, generator=gen).to(dtype)
        k, z = (x.float() @ w.float().T for w in weights)  # the plan's fp32 linears
        positions = torch.tensor(starts)[:, None] + done + torch.arange(tokens)  # [B, T]
        ins = [k, z, positions, slots, ape, norm, *mine]
        (got,) = run_kernel(op, ins, kernel_cache)
        op.run(ins[:6] + ref)  # the same step on the reference's own state and cache
        assert got is mine[2]
        torch.testing.assert_close(mine[0], ref[0], rtol=0, atol=0)  # state: raw K and Z + ape
        torch.testing.assert_close(mine[1], ref[1], rtol=0, atol=0)
        torch.testing.assert_close(mine[2], ref[2], **TOL[dtype])
        assert all(torch.equal(s[1], old) for s, old in zip(mine, skipped))
        done += tokens
    written = (ref[2][slots] != cache[slots]).any(-1).sum()  # entries the steps wrote
    assert written >= rows * (sum(steps) // ratio - 1)


def test_official_rounding_is_refused():
    """`sim` (numerics: official) rounds new entries; the template does not, so it says so."""
    op = Compressor(ROPE, 10000.0, None, ratio=16, sim="fp8")
    with pytest.raises(ValueError, match="sim='fp8'"):
        jit.params_for(op.kind, op.attrs(), [((1,), "bf16")] * len(op.operand_roles()))
