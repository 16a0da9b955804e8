"""The torch backend on a GPU: the tiny model and a 2-layer Flash-shape slice (real dims,
random weights), bf16 on CUDA against fp32 on the same device; batch invariance and exact
speculation on the GPU. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SPECS
from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.engine import Engine
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.spec import load_spec

pytestmark = pytest.mark.gpu


def run(spec, weights, dtype, prompt: list[int], steps: int) -> torch.Tensor:
    plan = compile_spec(spec, CompileOptions(max_tokens=512, max_seq=2048, weights="bf16")).plan
    engine = Engine(plan, weights, device="cuda", dtype=dtype)
    engine.reset(1)
    out = [engine.forward([prompt])]
    for t in range(steps):
        out.append(engine.forward([[prompt[t]]]))
    return torch.cat(out)


@pytest.mark.parametrize("name, n, steps, tol", [
    ("tiny", 300, 100, 0.05),
    ("variants/flash-2l-slice", 300, 20, 0.1),
])  # fmt: skip
def test_bf16_on_cuda_tracks_fp32(name, n, steps, tol):
    spec = load_spec(SPECS / f"{name}.yaml")
    weights = random_weights(spec, seed=0)
    prompt = torch.randint(
        0, spec.vocab_size, (n,), generator=torch.Generator().manual_seed(0)
    ).tolist()
    fp32 = run(spec, weights, torch.float32, prompt, steps)
    bf16 = run(spec, weights, torch.bfloat16, prompt, steps)
    assert torch.isfinite(bf16).all()
    rel = ((bf16 - fp32).norm(dim=-1) / fp32.norm(dim=-1)).max().item()
    assert rel < tol, f"relative logit error {rel:.3g}"


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_speculation_keeps_the_greedy_tokens_on_cuda(backend):
    """The tiny model, fp32 activations on the GPU (bf16 verify and decode steps may round a
    near-tie differently): 96 greedy tokens with MTP drafts (K = 2) and with the perfect
    drafter (K = 3) equal plain decoding's, for a batch of two lengths."""
    from v4c.runtime.drafting import MtpDrafter
    from v4c.runtime.generate import generate
    from v4c.runtime.sampler import Sampler

    spec = load_spec("tiny")
    weights = random_weights(spec, seed=0)
    options = CompileOptions(max_batch=2, max_tokens=64, max_seq=256, weights="bf16", dtype="fp32")
    plan = compile_spec(spec, options).plan
    engine = Engine(plan, weights, device="cuda", dtype=torch.float32, backend=backend)
    prompts = [list(range(100, 140)), list(range(300, 313))]

    def greedy(drafter=None):
        return generate(engine, prompts, Sampler(), max_new_tokens=96, stop_ids=set(),
                        drafter=drafter).tokens  # fmt: skip

    plain = greedy()
    assert greedy(MtpDrafter(engine, Sampler(), 2)) == plain
    assert greedy(MtpDrafter(engine, Sampler(), 3, oracle=plain)) == plain


def test_flash_slice_is_batch_invariant_on_cuda(tmp_path):
    """The Triton kernels compiled for the GPU (tensor cores, the warps and layouts the
    interpreter does not have), the Flash slice with random weights as stored (FP8/FP4,
    official numerics: bf16 tensor cores, FP8 activations, the default): a 150-token
    sequence (past the 128-token window, CSA and HCA entries written) gets the same logits,
    bit for bit, decoded alone, prefilled in chunks of 3 (verify-sized) and of 20 (the
    prefill forms: sparse attention folding its slices in a program per token, the prefill
    GEMM tiles), and decoded beside a second sequence in the other cache row:
    tests/runtime/test_invariance.py's claim on the tiny model in the interpreter, on the
    hardware."""
    from tests.runtime.test_invariance import _run, invariance_engine

    spec = load_spec(SPECS / "variants" / "flash-2l-slice.yaml")
    engine = invariance_engine(spec, "official", "triton", tmp_path, max_tokens=20, max_seq=256,
                               device="cuda")  # fmt: skip
    gen = torch.Generator().manual_seed(2)
    seq, other = torch.randint(0, spec.vocab_size, (2, 150), generator=gen).tolist()
    alone = _run(engine, [seq], 1, [0], len(seq))
    for chunk in (3, 20):
        assert torch.equal(_run(engine, [seq], chunk, [0], len(seq)), alone), chunk
    assert torch.equal(_run(engine, [other, seq], 1, [1, 0], len(seq))[1:], alone)
