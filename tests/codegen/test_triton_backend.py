"""The Triton backend runs the whole plan: its logits against the torch backend's (the
reference semantics) on the same plan and weights, prefill then decode steps. On CPU the
kernels run in the Triton interpreter; the `gpu` tests run them compiled, at Flash shapes."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SPECS
from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.engine import Engine
from v4c.runtime.random_weights import random_weights
from v4c.spec import load_spec

pytestmark = pytest.mark.slow


def engines(spec, weights, device, dtype, kernel_cache, **options):
    held = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    options = CompileOptions(max_batch=2, weights="bf16", dtype=held, **options)
    plan = compile_spec(spec, options).plan
    ref = Engine(plan, weights, device=device, dtype=dtype)
    tri = Engine(
        plan, weights, device=device, dtype=dtype, backend="triton", kernel_root=kernel_cache
    )
    return ref, tri


def compare(ref: Engine, tri: Engine, prompts: list[list[int]], steps: int, atol: float) -> None:
    ref.reset(len(prompts))
    tri.reset(len(prompts))
    worst = (ref.forward(prompts) - tri.forward(prompts)).abs().max().item()
    tokens = [[p[-1]] for p in prompts]
    for _ in range(steps):
        a, b = ref.forward(tokens), tri.forward(tokens)
        worst = max(worst, (a - b).abs().max().item())
        tokens = [[int(t)] for t in a.argmax(-1)]
    assert worst <= atol, f"max |torch - triton| = {worst:.3g}"
    for key in ref.state:  # the caches the two backends kept agree too
        torch.testing.assert_close(tri.state[key], ref.state[key], rtol=atol, atol=atol)


def test_tiny_prefill_and_50_decode_steps(kernel_cache):
    """A 10-token prefill then 50 decode steps: the window (16) and many CSA blocks are
    crossed and the indexer's top-k (4) is smaller than the blocks; fp32, so the kernels must
    agree to float rounding. (One sequence: the interpreter runs one program per token.)"""
    spec = load_spec("tiny")
    ref, tri = engines(
        spec, random_weights(spec, seed=3), "cpu", torch.float32, kernel_cache, max_seq=128
    )
    prompt = torch.randint(
        0, spec.vocab_size, (10,), generator=torch.Generator().manual_seed(1)
    ).tolist()
    compare(ref, tri, [prompt], steps=50, atol=1e-4)


@pytest.mark.gpu
def test_flash_slice_end_to_end_on_gpu(kernel_cache):
    spec = load_spec(SPECS / "variants" / "flash-2l-slice.yaml")
    weights = random_weights(spec, seed=0, dtype=torch.bfloat16)
    ref, tri = engines(
        spec, weights, "cuda", torch.bfloat16, kernel_cache, max_seq=1024, max_tokens=512
    )
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, spec.vocab_size, (n,), generator=gen).tolist() for n in (300, 130)]
    compare(ref, tri, prompts, steps=20, atol=0.25)  # bf16 activations through 2 Flash layers


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


def test_quantised_experts_stay_quantised(tmp_path, kernel_cache):
    """An official checkpoint on the Triton backend: the FP4 routed and FP8 shared expert
    weights stay in their stored format in memory (the kernels dequantise on the fly), and
    the logits match the torch backend, which dequantises them at load."""
    from v4c.ir.semantics.quant import QuantWeight
    from v4c.runtime.checkpoint import make_tiny
    from v4c.session import open_session

    make_tiny(tmp_path / "tiny")
    ref = open_session(tmp_path / "tiny", backend="torch", numerics="plain", progress=False)
    tri = open_session(
        tmp_path / "tiny", backend="triton", numerics="plain", progress=False,
        kernel_root=kernel_cache,
    )  # fmt: skip
    kept = {name: w.fmt for name, w in tri.engine.params.items() if isinstance(w, QuantWeight)}
    assert kept["layers.0.ffn.experts.{e}.w1.weight"] == "fp4"
    assert kept["layers.3.ffn.shared_experts.w2.weight"] == "fp8"
    assert len(kept) == 4 * 6 and not any(
        isinstance(w, QuantWeight) for w in ref.engine.params.values()
    )
    compare(ref.engine, tri.engine, [[0, 128803, 19923, 128804, 128822]], steps=2, atol=1e-4)
