"""The Triton backend runs the whole plan: its logits against the torch backend's (the
reference semantics) on the same plan and weights, prefill then decode steps. On CPU the
kernels run in the Triton interpreter; the `gpu` tests run them compiled, at Flash shapes."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SPECS
from tests.small_vocab import small_vocab
from v4c.compile import compile_spec
from v4c.ir.types import ir_dtype
from v4c.passes.base import CompileOptions
from v4c.runtime.engine import Engine
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.spec import load_spec

pytestmark = pytest.mark.slow


def engines(spec, weights, device, dtype, kernel_cache, **options):
    held = ir_dtype(str(dtype))
    options = CompileOptions(max_batch=2, weights="bf16", dtype=held, **options)
    plan = compile_spec(spec, options).plan
    ref = Engine(plan, weights, device=device, dtype=dtype)
    tri = Engine(
        plan, weights, device=device, dtype=dtype, backend="triton", kernel_root=kernel_cache
    )
    return ref, tri


def compare(ref: Engine, tri: Engine, steps: list[list[list[int]]], atol: float) -> None:
    """The same steps (each: the new tokens of every sequence) on both engines; every step's
    logits and, at the end, every cache agree to `atol`."""
    ref.reset(len(steps[0]))
    tri.reset(len(steps[0]))
    worst = max((ref.forward(s) - tri.forward(s)).abs().max().item() for s in steps)
    assert worst <= atol, f"max |torch - triton| = {worst:.3g}"
    for key in ref.state:  # the caches the two backends kept agree too
        torch.testing.assert_close(tri.state[key], ref.state[key], rtol=atol, atol=atol)


def decode_steps(gen: torch.Generator, vocab: int, rows: int, n: int) -> list[list[list[int]]]:
    """`n` decode steps of random tokens for `rows` sequences."""
    return [
        [[t] for t in torch.randint(0, vocab, (rows,), generator=gen).tolist()] for _ in range(n)
    ]


def test_tiny_prefill_and_decode_across_boundaries(kernel_cache):
    """Each cache boundary crossed by a prefill and by a decode step, alternating, so that
    every step reads caches the other entry wrote: a prefill of 16 tokens (CSA entries
    complete at 3, 7, 11, 15; the window of 16 fills), a decode step at 16 (the window
    wraps; a partial CSA group), a 2-token prefill inside the group (17, 18), a decode step
    that completes the fifth entry (19: the indexer's top-k 4 now selects among 5), a
    prefill across another entry (23); fp32, so the kernels must agree to float rounding.
    The interpreter takes 10-20 s of CPU a decode step: more decode steps would only repeat
    these (a decode inside a group, a decode completing an entry)."""
    spec = small_vocab()
    assert spec.attention.sliding_window == 16 and spec.attention.indexer.topk == 4
    ref, tri = engines(
        spec, random_weights(spec, seed=3), "cpu", torch.float32, kernel_cache, max_seq=128
    )
    ids = torch.randint(0, spec.vocab_size, (24,), generator=torch.Generator().manual_seed(1))
    steps = [range(0, 16), range(16, 17), range(17, 19), range(19, 20), range(20, 24)]
    compare(ref, tri, [[ids[s].tolist()] for s in steps], atol=1e-4)


@pytest.mark.gpu
def test_flash_slice_end_to_end_on_gpu(kernel_cache):
    spec = load_spec(SPECS / "variants" / "flash-2l-slice.yaml")
    weights = random_weights(spec, seed=0, dtype=torch.bfloat16)
    ref, tri = engines(
        spec, weights, "cuda", torch.bfloat16, kernel_cache, max_seq=1024, max_tokens=512
    )
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, spec.vocab_size, (n,), generator=gen).tolist() for n in (300, 130)]
    steps = [prompts, *decode_steps(gen, spec.vocab_size, 2, 20)]
    compare(ref, tri, steps, atol=0.25)  # bf16 activations through 2 Flash layers


@pytest.mark.gpu
def test_every_flash_slice_launch_on_gpu(kernel_cache):
    """Launch by launch at Flash shapes: each kernel against its op on the same inputs."""
    spec = load_spec(SPECS / "variants" / "flash-2l-slice.yaml")
    weights = random_weights(spec, seed=0, dtype=torch.bfloat16)
    plan = compile_spec(spec, CompileOptions(max_tokens=128, max_seq=1024, weights="bf16")).plan
    tri = Engine(plan, weights, device="cuda", dtype=torch.bfloat16, backend="triton",
                 kernel_root=kernel_cache)  # fmt: skip
    tri.reset(1)
    program = tri.programs["prefill"]
    ids = torch.randint(0, spec.vocab_size, (1, 128), device="cuda")
    values = {
        "ids": ids,
        "positions": torch.arange(128, device="cuda")[None],
        "slots": torch.tensor([0], device="cuda"),
    }
    sources = {"param": tri.params, "state": tri.state}
    seen = set()
    for i, (launch, op) in enumerate(zip(program.entry.launches, program.ops)):
        args = [sources[r.kind][r.name] if r.kind in sources else values[r.name]
                for r in launch.inputs]  # fmt: skip
        cloned = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        want = op.run(_dense(args))
        if launch.kind == "kernel":
            got = program.kernels[i].run(*cloned)
            for g, w in zip(got, want):
                if w.dtype.is_floating_point:
                    torch.testing.assert_close(
                        g.float(), w.float(), rtol=2e-2, atol=2e-2, msg=launch.node
                    )
                else:
                    assert torch.equal(g, w), launch.node
            seen.add(launch.op)
        for ref_out, out in zip(launch.outputs, want):
            values[ref_out.name] = out
    assert {
        "sparse_attention",
        "compressor",
        "indexer_topk",
        "grouped_swiglu",
        "hc_post_pre_norm",
    } <= seen


def _dense(args: list) -> list:
    from v4c.ir.semantics.quant import QuantWeight

    return [a.dequantize(torch.bfloat16) if isinstance(a, QuantWeight) else a for a in args]


@pytest.mark.parametrize("numerics", ["official", "plain"])
def test_backend_auto_is_triton_on_cuda_for_every_numerics_mode(numerics):
    """`--backend auto`: the kernels on CUDA whatever the numerics (they compute the official
    roundings), the torch reference on a CPU (no interpreter by default)."""
    from v4c.session import default_backend

    assert default_backend("cuda", numerics)[0] == "triton"
    assert default_backend("cuda:1", numerics)[0] == "triton"
    assert default_backend("cpu", numerics) == ("torch", "no CUDA device")
