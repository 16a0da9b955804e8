"""compressor (Triton) against the op's reference, step after step on the same state and cache.

Each schedule drives two rows that start at different positions through a prefill that ends
inside a window, decode steps that cross window boundaries, a chunk that starts mid-window and
a step that completes several entries; after every step the state must equal the reference's
(the same fp32 values, layout included) and the cache must match within the dtype's tolerance
(the pooling's and the norm's fp32 sums run in another order than torch's: fp32 1e-5,
bf16 one rounding apart), or, with numerics official in bf16, bit for bit: there every value
the reference rounds is rounded on the bits, so the fp32 order differences vanish in the
roundings.
State and cache hold one row more than the step, whose rows are cache rows `slots` (a
permutation with one row skipped): the skipped row must stay exactly as it was.
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.codegen.params import describe
from v4c.ir.ops.compressor import Compressor
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
    op = Compressor(ROPE, 10000.0, YARN if ratio == 4 else None, ratio=ratio, eps=1e-6)
    drive(op, dtype, starts, steps, kernel_cache, TOL[dtype])


@pytest.mark.parametrize(
    "sim, ratio, starts, steps",
    [
        ("fp8", 4, (2, 9), (3, 1, 1, 7)),  # main compressor, CSA: non-RoPE dims to FP8
        ("fp8", 16, (0, 13), (13, 1, 1, 1, 20)),  # main compressor, HCA
        ("fp4", 4, (0, 3), (6, 1, 1, 9)),  # the indexer's: Hadamard, then FP4
    ],
)
def test_official_rounding_is_bitwise(sim, ratio, starts, steps, kernel_cache):
    """`sim` (numerics official) in bf16: the entries as the reference rounds them, bit for
    bit; and the rounding is on (the reference's entries differ from plain numerics')."""
    yarn = YARN if ratio == 4 else None
    op = Compressor(ROPE, 10000.0, yarn, ratio=ratio, eps=1e-6, sim=sim)
    official = drive(op, torch.bfloat16, starts, steps, kernel_cache, dict(rtol=0, atol=0))
    plain = drive(Compressor(ROPE, 10000.0, yarn, ratio=ratio, eps=1e-6), torch.bfloat16,
                  starts, steps)  # fmt: skip
    assert not torch.equal(official, plain)


@pytest.mark.parametrize(
    "sim, ratio, dtype, starts, steps",
    [
        ("none", 4, torch.float32, (0, 3), (6, 1, 1, 5)),  # fp32: any reordering shows
        ("fp8", 16, torch.bfloat16, (0, 13), (13, 1, 1, 20)),
        ("fp4", 4, torch.bfloat16, (2, 9), (3, 1, 1, 7)),
    ],
)
def test_the_interpreters_channel_blocks_are_the_gpus_bits(sim, ratio, dtype, starts, steps,
                                                           kernel_cache):  # fmt: skip
    """The interpreter pools an entry's channels in one program (`wide`), a GPU 4 channels a
    program: the same state and cache, bit for bit, after every step (the channels are
    independent; the slot splits and their merge order are the GPU's in both)."""
    op = Compressor(ROPE, 10000.0, YARN if ratio == 4 else None, ratio=ratio, eps=1e-6, sim=sim)
    wide, gpu = (drive(op, dtype, starts, steps, kernel_cache, wide=w) for w in (True, False))
    for a, b in zip(wide, gpu):
        assert torch.equal(a, b)


def drive(op, dtype, starts, steps, root=None, tol=None, wide=None) -> torch.Tensor:
    """Runs the schedule on the kernel (when `root`, checking it against the reference after
    each step: state exact, cache within `tol`, if given) and the reference; returns the
    reference's final cache, or with `wide` (the template's channel blocks: an entry's
    channels whole, or the GPU's 4) the kernel's final state and cache."""
    ratio = op.ratio
    gen = torch.Generator().manual_seed(ratio)
    f = coff(ratio)
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
        op.run(ins[:6] + ref)  # the same step on the reference's own state and cache
        done += tokens
        if root is None:
            continue
        params = jit.params_for(op.kind, op.attrs(), [describe(t) for t in ins])
        assert params.wide  # the suite runs in the interpreter
        if wide is not None:
            params = params.model_copy(update=dict(wide=wide))
        (got,) = run_kernel(op, ins, root, params)
        assert got is mine[2]
        torch.testing.assert_close(mine[0], ref[0], rtol=0, atol=0)  # state: raw K and Z + ape
        torch.testing.assert_close(mine[1], ref[1], rtol=0, atol=0)
        if tol is not None:
            torch.testing.assert_close(mine[2], ref[2], **tol)
        assert all(torch.equal(s[1], old) for s, old in zip(mine, skipped))
    written = (ref[2][slots] != cache[slots]).any(-1).sum()  # entries the steps wrote
    assert written >= rows * (sum(steps) // ratio - 1)
    return mine if wide is not None else ref[2]
