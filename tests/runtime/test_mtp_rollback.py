"""The MTP block's own caches after speculative rounds, bit for bit: rounds of verify,
rollback (`runtime/rollback.py`) and drafting (`runtime/drafting.py`, chained steps undone)
leave the block's sliding-window ring as a fresh run over the committed sequence leaves it,
and draft the same tokens.

The oracle is the same engine after a reset: the main model's prefill of every committed
token, then the MTP block over the last W positions (what `start` runs after a prompt). The
speculative run decodes greedily with K = 2 (random weights: drafts are mostly rejected, so
most rounds undo a chained step and a rejected verify position) for 9 rounds past a 21-token
prompt, crossing the block's 16-token window. Bitwise equality needs batch invariance too: the
oracle computes each position in a prefill of many rows, the run in verify and draft steps
of a few."""

from __future__ import annotations

import pytest
import torch

from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.runtime.drafting import MtpDrafter
from v4c.runtime.engine import Engine
from v4c.runtime.sampler import Sampler
from v4c.spec import load_spec

pytestmark = pytest.mark.slow
PROMPT = [(17 * i + 3) % 1024 for i in range(21)]
ROUNDS, K = 9, 2


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mtp_rollback")
    (folder / "spec.yaml").write_text("extends: tiny.yaml\nname: tiny-mtp-rb\nvocab_size: 1024\n")
    spec = load_spec(folder / "spec.yaml")
    options = CompileOptions(max_batch=1, max_tokens=64, max_seq=64, weights="bf16", dtype="fp32")
    plan = compile_spec(spec, options).plan
    weights = random_weights(spec, seed=8)
    return Engine(plan, {n: weights[n] for n in plan.params}, dtype=torch.float32)


def _mtp_caches(engine: Engine) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in engine.state.items() if k.startswith("M")}


def test_mtp_ring_after_rounds_equals_a_fresh_run_over_the_committed_tokens(engine):
    sampler = Sampler()
    drafter = MtpDrafter(engine, sampler, K)
    tokens = list(PROMPT)
    engine.reset(1)
    tokens.append(int(sampler.sample(drafter.prefill([PROMPT], reset=True))[0]))
    drafter.start([0], [tokens[-1]])
    for _ in range(ROUNDS):
        emitted = drafter.propose([0], [tokens[-1]])[0]
        tokens += emitted
        drafter.commit([len(emitted)], [True])
    assert drafter.stats.rounds == ROUNDS and engine.lengths == [len(tokens) - 1]
    spec_caches, spec_drafts = _mtp_caches(engine), drafter.drafts[0][0]
    assert spec_caches  # the block has caches of its own

    oracle = MtpDrafter(engine, sampler, K)
    engine.reset(1)
    oracle.prefill([tokens[:-1]], reset=True)
    oracle.start([0], [tokens[-1]])
    for key, cache in _mtp_caches(engine).items():
        assert torch.equal(spec_caches[key], cache), key
    assert oracle.drafts[0][0] == spec_drafts
