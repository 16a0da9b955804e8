"""Speculative decoding end to end on the tiny model (vocabulary 1024, torch backend), under
both numerics modes (plain in fp32, official in bf16 with the weights as stored): greedy with
a drafter emits exactly the tokens of plain greedy decoding, and leaves the main model's
caches bit for bit as plain decoding leaves them.

The oracle of every check is the plain `generate` loop on the same engine and weights. The
runs decode 120 tokens after prompts of 40 and 13 tokens, so they cross the sliding window
(16) and the CSA windows (4) many times and the HCA window (128) once each. Three drafters:
- the MTP block (random weights: it almost never agrees with the main model, so this covers
  rejection, the MTP's own rounds and its chained steps);
- the perfect drafter (every draft accepted: verify steps of K+1 tokens kept whole);
- the perfect drafter on a corrupted oracle (every 3rd/5th token wrong, rows at different
  places): rows keep different numbers of drafts in one step, and rejected tokens are undone
  mid-window, mid-entry and across window boundaries.
Caches are compared bitwise: every op of the torch backend is batch-invariant
(ir/semantics/invariant.py), so a verify step computes each token's row as a decode step does.
"""

from __future__ import annotations

import pytest
import torch

from v4c.compile import compile_spec
from v4c.ir.build import build
from v4c.passes.base import CompileOptions
from v4c.runtime.drafting import MtpDrafter
from v4c.runtime.engine import Engine
from v4c.runtime.generate import generate
from v4c.runtime.checkpoint.random_weights import as_stored, random_weights
from v4c.runtime.reference import ReferenceExecutor
from v4c.runtime.sampler import Sampler
from v4c.spec import load_spec

pytestmark = pytest.mark.slow
NEW = 120
PROMPTS = [[(7 * i + 3) % 1024 for i in range(40)], [(11 * i + 5) % 1024 for i in range(13)]]
MODES = {  # numerics -> (activation dtype at run time, weight storage)
    "plain": ("fp32", "bf16"),
    "official": ("bf16", "as-stored"),
}


# official numerics (bf16, weights as stored) takes minutes on 2 cores: `pytest -m long`
@pytest.fixture(
    scope="module",
    params=[pytest.param(m, marks=pytest.mark.long) if m == "official" else m for m in MODES],
)
def setup(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("drafting")
    numerics, (dtype, stored) = request.param, MODES[request.param]
    (folder / "spec.yaml").write_text("extends: tiny.yaml\nname: tiny-draft\nvocab_size: 1024\n")
    spec = load_spec(folder / "spec.yaml")
    weights = random_weights(spec, seed=4)
    options = CompileOptions(
        max_batch=2, max_tokens=64, max_seq=320, weights=stored, dtype=dtype, numerics=numerics
    )
    plan = compile_spec(spec, options).plan
    activations = torch.float32 if dtype == "fp32" else torch.bfloat16
    stored = as_stored({n: weights[n] for n in plan.params}, plan.params)
    engine = Engine(plan, stored, dtype=activations)
    plain = {}
    for name, prompts in (("single", PROMPTS[:1]), ("batch", PROMPTS)):
        result = generate(engine, prompts, Sampler(), max_new_tokens=NEW, stop_ids=set())
        plain[name] = (result.tokens, _main_caches(engine), list(engine.lengths))
    return spec, weights, engine, plain


def _main_caches(engine):
    return {k: v.clone() for k, v in engine.state.items() if not k.startswith("M")}


def _assert_same_caches(engine, want):
    for key, cache in _main_caches(engine).items():
        assert torch.equal(cache, want[key]), key


def _speculate(engine, prompts, k, oracle=None):
    drafter = MtpDrafter(engine, Sampler(), k, oracle=oracle)
    result = generate(
        engine, prompts, Sampler(), max_new_tokens=NEW, stop_ids=set(), drafter=drafter
    )
    return result, drafter.stats


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("case", ["single", "batch"])
def test_mtp_drafts_give_the_plain_greedy_tokens_and_caches(setup, case, k):
    _, _, engine, plain = setup
    tokens, caches, lengths = plain[case]
    prompts = PROMPTS[:1] if case == "single" else PROMPTS
    result, stats = _speculate(engine, prompts, k)
    assert result.tokens == tokens
    assert engine.lengths == lengths
    _assert_same_caches(engine, caches)
    assert stats.rounds >= (NEW - 1) // (k + 1) and stats.emitted == len(prompts) * (NEW - 1)


def test_auto_gives_the_plain_greedy_tokens_and_caches(setup):
    """`--speculative auto` (plain steps, rounds, maybe plain again: when it stops depends on
    timing) changes nothing in the output or the caches."""
    _, _, engine, plain = setup
    tokens, caches, lengths = plain["batch"]
    drafter = MtpDrafter(engine, Sampler(), 2, auto=True)
    result = generate(
        engine, PROMPTS, Sampler(), max_new_tokens=NEW, stop_ids=set(), drafter=drafter
    )
    assert result.tokens == tokens and engine.lengths == lengths
    _assert_same_caches(engine, caches)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_perfect_drafter_keeps_every_draft(setup, k):
    _, _, engine, plain = setup
    tokens, caches, lengths = plain["batch"]
    result, stats = _speculate(engine, PROMPTS, k, oracle=tokens)
    assert result.tokens == tokens and engine.lengths == lengths
    _assert_same_caches(engine, caches)
    assert stats.accepted == stats.drafted  # the drafts after the last token do not count
    assert stats.rounds == -(-(NEW - 1) // (k + 1))


def test_rows_that_keep_different_numbers_of_drafts(setup):
    _, _, engine, plain = setup
    tokens, caches, lengths = plain["batch"]
    wrong = [
        [t if i % every else (t + 1) % 1024 for i, t in enumerate(row)]
        for row, every in zip(tokens, (3, 5))
    ]
    result, stats = _speculate(engine, PROMPTS, 3, oracle=wrong)
    assert result.tokens == tokens and engine.lengths == lengths
    _assert_same_caches(engine, caches)
    assert 0 < stats.accepted < stats.drafted


def test_drafts_are_the_mtp_blocks_argmax_on_the_committed_sequence(setup):
    """The first draft after a prefill and the second (chained), by the reference semantics:
    the main model over prompt + first token, then the MTP block with each position's
    streams paired with the token after it (§11); the chained step feeds the block its own
    streams at the last position and the first draft."""
    spec, weights, engine, _ = setup
    drafter = MtpDrafter(engine, Sampler(), 2)
    prompt = PROMPTS[0]
    engine.reset(1)
    first = int(drafter.prefill([prompt], reset=True).argmax())
    drafter.start([0], [first])
    executor = ReferenceExecutor(build(spec), weights)
    state = executor.new_state(batch=1, max_seq=320)
    n = len(prompt)
    step = {"ids": torch.tensor([prompt]), "positions": torch.arange(n)[None]}
    step["slots"] = torch.tensor([0])
    main = executor.run(step, state, outputs=("logits", "hidden"))
    assert int(main["logits"][0, -1].argmax()) == first
    step["mtp_ids"] = torch.tensor([prompt[1:] + [first]])
    step["hidden"] = main["hidden"]
    mtp = executor.run(step, state, outputs=("mtp_logits", "mtp_hidden"))
    d1 = int(mtp["mtp_logits"][0, -1].argmax())
    chained = {"mtp_ids": torch.tensor([[d1]]), "positions": torch.tensor([[n]])}
    chained.update(slots=torch.tensor([0]), hidden=mtp["mtp_hidden"][:, -1:])
    d2 = int(executor.run(chained, state, outputs=("mtp_logits",))["mtp_logits"][0, -1].argmax())
    assert drafter.drafts[0][0] == [d1, d2]


def test_draft_tokens_beyond_the_plan_are_refused(setup):
    from v4c.errors import V4CError

    _, _, engine, _ = setup
    for k in (0, 4):
        with pytest.raises(V4CError, match=f"--draft-tokens {k}: the plan verifies 1..3"):
            MtpDrafter(engine, Sampler(), k)
