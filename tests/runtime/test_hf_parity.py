"""Parity with an independent oracle: the same tiny weights in transformers'
DeepseekV4ForCausalLM (written in the HF layout) and in v4c (compiled plan, torch backend),
fp32, numerics plain. Logits agree to 1e-4 (max abs) on prefills, chunked prefills, and
decode steps across the window and the ratio-4 and ratio-128 compression boundaries.

The tiny spec has sliding, CSA (index top-k 4 < the compressed blocks) and HCA layers, two
hash-gated and two score-gated layers, a 16-token window and ratio 128; 390 tokens cross the
HCA boundary 3 times, decoding across each.
"""

from __future__ import annotations

import pytest
import torch

from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.checkpoint.write import write_hf
from v4c.runtime.engine import Engine
from tests.plan_runner import PlanRunner
from v4c.runtime.checkpoint.random_weights import random_weights
from tests.steps import around
from v4c.spec import load_spec

ATOL = 1e-4  # max |v4c - HF| over the logits, fp32
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import DeepseekV4ForCausalLM

    torch.manual_seed(0)
    spec = load_spec("tiny")
    weights = random_weights(spec, seed=3)
    folder = tmp_path_factory.mktemp("hf")
    write_hf(folder, spec, weights, dtype=torch.float32)
    hf = DeepseekV4ForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = torch.randint(0, spec.vocab_size, (1, 400), generator=torch.Generator().manual_seed(1))
    return spec, weights, hf, ids


def engine(spec, weights, max_tokens=512, logits="last") -> Engine:
    options = CompileOptions(
        max_batch=2, max_tokens=max_tokens, max_seq=512, logits=logits, weights="bf16", dtype="fp32"
    )
    eng = Engine(compile_spec(spec, options).plan, weights, dtype=torch.float32)
    eng.reset(1)
    return eng


def hf_logits(hf, ids) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids).logits.float()


@pytest.mark.parametrize("n", [1, 7, 64, 300])
def test_prefill_every_position(setup, n):
    spec, weights, hf, ids = setup
    plan = compile_spec(
        spec,
        CompileOptions(max_tokens=512, max_seq=512, logits="all", weights="bf16", dtype="fp32"),
    ).plan
    eng = Engine(plan, weights, dtype=torch.float32)
    eng.reset(1)
    ours = PlanRunner(plan, eng.params, eng.state).run(
        {"ids": ids[:, :n], "positions": torch.arange(n)[None], "slots": torch.tensor([0])}
    )["logits"]
    theirs = hf_logits(hf, ids[:, :n])
    assert (ours - theirs).abs().max().item() <= ATOL


def test_prefill_and_decode_across_every_boundary(setup):
    """Prefills that stop 3 tokens before a boundary (mid-window: 3 is no multiple of 4),
    then decode steps 5 past it: at 104 a CSA entry completes during the first decode steps;
    at 128, 256 and 384 the window wraps and CSA and HCA entries complete. The prefills after
    the first continue a sequence. Each step's logits against HF's at that position (HF is
    causal: one forward over the whole sequence gives them all)."""
    spec, weights, hf, ids = setup
    assert (spec.attention.sliding_window, spec.attention.hca_ratio) == (16, 128)
    steps = around([104, 128, 256, 384], before=3, after=5)
    eng = engine(spec, weights)
    ours = torch.stack([eng.forward([ids[0, s].tolist()])[0] for s in steps])
    last = [s[-1] for s in steps]
    theirs = hf_logits(hf, ids[:, : last[-1] + 1])[0, last]
    diff = (ours - theirs).abs().amax(-1)
    assert diff.max().item() <= ATOL, (
        f"worst position {last[int(diff.argmax())]}: {diff.max().item():.3g}"
    )


def test_chunked_prefill_equals_one_shot(setup):
    spec, weights, hf, ids = setup
    one_shot = engine(spec, weights).forward([ids[0, :300].tolist()])
    chunked = engine(spec, weights, max_tokens=37).forward(
        [ids[0, :300].tolist()]
    )  # 37: no ratio multiple
    assert (one_shot - chunked).abs().max().item() <= ATOL
    assert (one_shot[0] - hf_logits(hf, ids[:, :300])[0, -1]).abs().max().item() <= ATOL


def test_prefill_after_earlier_tokens(setup):
    """The official code prefills only from position 0; v4c continues a sequence with a
    multi-token step (here 130 then 170 tokens: both cross a ratio-128 boundary)."""
    spec, weights, hf, ids = setup
    eng = engine(spec, weights)
    eng.forward([ids[0, :130].tolist()])
    ours = eng.forward([ids[0, 130:300].tolist()])
    assert (ours[0] - hf_logits(hf, ids[:, :300])[0, -1]).abs().max().item() <= ATOL


def test_batch_of_different_lengths(setup):
    spec, weights, hf, ids = setup
    eng = engine(spec, weights)
    eng.reset(2)
    first = eng.forward([ids[0, :50].tolist(), ids[0, 100:117].tolist()])
    second = eng.forward([[int(ids[0, 50])], [int(ids[0, 117])]])  # one decode step, two lengths
    assert (first[0] - hf_logits(hf, ids[:, :50])[0, -1]).abs().max().item() <= ATOL
    assert (first[1] - hf_logits(hf, ids[:, 100:117])[0, -1]).abs().max().item() <= ATOL
    assert (second[0] - hf_logits(hf, ids[:, :51])[0, -1]).abs().max().item() <= ATOL
    assert (second[1] - hf_logits(hf, ids[:, 100:118])[0, -1]).abs().max().item() <= ATOL
