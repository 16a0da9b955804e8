"""Greedy speculation at Flash's real attention dims: the 2-layer Flash slice (a CSA and an
HCA layer, specs/variants/flash-2l-slice.yaml) with its MTP block put back, random weights,
vocabulary 1024 and 4 experts (top-2) to fit a CPU (the attention and compression dims are
Flash's), torch backend. The prompt (140
tokens) crosses the sliding window (128), the HCA ratio (128) and many CSA windows (4); the
indexer's top-512 then keeps every CSA entry (a selection among more is the tiny model's
test). Both numerics modes: plain (fp32 activations, bf16 weights) and official (bf16
activations, the weights as the release stores them, FP8 activations into the FP8 GEMMs).
Greedy decoding with the MTP drafter (K = 1..3: rejected drafts undone) and with the
perfect drafter (K = 3: verify steps of 4 tokens kept whole) emits exactly plain greedy
decoding's tokens and leaves the main model's caches bit for bit as it does. The oracle is
the plain `generate` loop on the same engine. About half an hour a mode on a loaded 2-core
machine: `long`.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SPECS
from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.checkpoint.random_weights import as_stored, random_weights
from v4c.runtime.drafting import MtpDrafter
from v4c.runtime.engine import Engine
from v4c.runtime.generate import generate
from v4c.runtime.sampler import Sampler
from v4c.spec import load_spec

pytestmark = [pytest.mark.slow, pytest.mark.long]
PROMPT = [(37 * i + 11) % 1024 for i in range(140)]
NEW = 10


@pytest.fixture(scope="module", params=["plain", "official"])
def setup(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("flash-draft")
    (folder / "spec.yaml").write_text(
        f"extends: {SPECS / 'variants/flash-2l-slice.yaml'}\nname: flash-slice-mtp\n"
        "vocab_size: 1024\nmoe: {num_experts: 4, top_k: 2}\n"
        "mtp: {num_layers: 1, attention: sliding}\n"
    )
    spec = load_spec(folder / "spec.yaml")
    # one step holds the MTP block's window (128): its first step covers it
    official = request.param == "official"
    options = CompileOptions(
        max_batch=1, max_tokens=128, max_seq=192, weights="as-stored" if official else "bf16",
        dtype="bf16" if official else "fp32", numerics=request.param,
    )  # fmt: skip
    plan = compile_spec(spec, options).plan
    weights = random_weights(spec, seed=3)
    weights = as_stored({n: weights[n] for n in plan.params}, plan.params)
    engine = Engine(plan, weights, dtype=torch.bfloat16 if official else torch.float32)
    plain = generate(engine, [PROMPT], Sampler(), max_new_tokens=NEW, stop_ids=set())
    return engine, plain.tokens, _main_caches(engine)


def _main_caches(engine):
    return {k: v.clone() for k, v in engine.state.items() if not k.startswith("M")}


@pytest.mark.parametrize("k, perfect", [(1, False), (2, False), (3, False), (3, True)])
def test_speculation_at_flash_dims_gives_the_plain_greedy_tokens_and_caches(setup, k, perfect):
    engine, tokens, caches = setup
    drafter = MtpDrafter(engine, Sampler(), k, oracle=tokens if perfect else None)
    result = generate(
        engine, [PROMPT], Sampler(), max_new_tokens=NEW, stop_ids=set(), drafter=drafter
    )
    assert result.tokens == tokens
    for key, cache in _main_caches(engine).items():
        assert torch.equal(cache, caches[key]), key
    if perfect:
        assert drafter.stats.accepted == drafter.stats.drafted > 0
