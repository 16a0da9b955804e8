"""Sampling with speculation on, end to end: the tokens it emits follow the main model's own
filtered distribution, checked by chi-square (alpha = 0.001, `tests/helpers/stats.py`).

The model is the tiny spec with a 4-token vocabulary (random weights, fp32, torch backend);
the sampler filters (temperature 0.5, top-k 2), so the draft distribution q the acceptance
rule divides by must be the filtered one the draft was drawn from. 64 copies of one prompt
decode 2 tokens per call: t1 from the prefill, t2 from the first verify round (the MTP
block's draft kept, or the rule's resample). The oracle is exact: p(t1) and p(t2 | t1) are
the sampler's probabilities of the main model's logits for the prompt and for the prompt +
t1, so the joint cells are p(t1) p(t2 | t1) over the pairs top-k leaves.

Applied to runtime/drafting.py by hand (q = the plain softmax of the MTP logits, no
temperature, no top-k), the mutant fails this test: chi-square 25.9 against the critical
16.3 (3 degrees of freedom); the correct rule passes."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.stats import assert_fits
from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.runtime.drafting import MtpDrafter
from v4c.runtime.engine import Engine
from v4c.runtime.generate import generate
from v4c.runtime.sampler import Sampler
from v4c.spec import load_spec

pytestmark = pytest.mark.slow
ROWS, CALLS = 64, 8  # 512 draws of (t1, t2)
PROMPT = [2, 3, 3, 2, 3]
FILTERS = {"temperature": 0.5, "top_k": 2}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spec_sampling")
    (folder / "spec.yaml").write_text("extends: tiny.yaml\nname: tiny-v4\nvocab_size: 4\n")
    spec = load_spec(folder / "spec.yaml")
    options = CompileOptions(
        max_batch=ROWS, max_tokens=16, max_seq=32, max_draft=1, weights="bf16", dtype="fp32"
    )
    plan = compile_spec(spec, options).plan
    weights = random_weights(spec, seed=11)
    return Engine(plan, {n: weights[n] for n in plan.params}, dtype=torch.float32)


def _p(engine: Engine, tokens: list[int]) -> torch.Tensor:
    engine.reset(1)
    return Sampler(**FILTERS).probabilities(engine.forward([tokens]))[0]


def test_speculative_sampling_draws_the_main_models_filtered_distribution(engine):
    p1 = _p(engine, PROMPT)
    firsts = p1.nonzero().flatten().tolist()  # the top-k tokens
    p2 = {t: _p(engine, PROMPT + [t]) for t in firsts}
    seconds = sorted({t for dist in p2.values() for t in dist.nonzero().flatten().tolist()})
    cells = [(a, b) for a in firsts for b in seconds]
    counts = dict.fromkeys(cells, 0)
    for seed in range(CALLS):
        sampler = Sampler(**FILTERS, seed=seed)
        drafter = MtpDrafter(engine, sampler, 1)
        result = generate(
            engine, [PROMPT] * ROWS, sampler, max_new_tokens=2, stop_ids=set(), drafter=drafter
        )
        assert drafter.stats.rounds == 1  # t2 came from a verify round
        for row in result.tokens:
            counts[tuple(row)] += 1  # a pair outside the cells is a KeyError: p = 0 there
    expected = [p1[a].item() * p2[a][b].item() for a, b in cells]
    assert_fits([counts[c] for c in cells], expected)
