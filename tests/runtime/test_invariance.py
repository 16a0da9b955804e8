"""Batch invariance end to end (DESIGN.md): a token's logits are bitwise the same whether it is
decoded alone, sits anywhere in a prefill chunk of T = 2..5 tokens, or its sequence shares
the step with B - 1 other sequences (B = 1..4, in any cache row), on the tiny model (vocabulary
1024) under both numerics modes, torch backend. The sequence (21 tokens) crosses the sliding
window (16) and five CSA windows (4), so the window ring, the compressor's state and the
indexer's selection are read across chunk boundaries.

The oracle is the same engine decoding the sequence one token at a time: a lone row is the
case every other shape must reproduce (what exact speculation and batching rely on)."""

from __future__ import annotations

import pytest
import torch

from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.checkpoint.random_weights import as_stored, random_weights
from v4c.runtime.engine import Engine
from v4c.spec import load_spec

pytestmark = pytest.mark.slow
N = 21
SEQ = [(13 * i + 7) % 1024 for i in range(N)]
MODES = {"plain": ("fp32", torch.float32), "official": ("bf16", torch.bfloat16)}


# official numerics (bf16, weights as stored) takes minutes on 2 cores: `pytest -m long`
@pytest.fixture(
    scope="module",
    params=[pytest.param(m, marks=pytest.mark.long) if m == "official" else m for m in MODES],
)
def engine(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("invariance")
    (folder / "spec.yaml").write_text("extends: tiny.yaml\nname: tiny-inv\nvocab_size: 1024\n")
    spec = load_spec(folder / "spec.yaml")
    dtype, activations = MODES[request.param]
    options = CompileOptions(
        max_batch=4, max_tokens=5, max_seq=32, logits="all", max_draft=0,
        numerics=request.param, dtype=dtype,
    )  # fmt: skip
    plan = compile_spec(spec, options).plan
    weights = random_weights(spec, seed=5)
    return Engine(
        plan, as_stored({n: weights[n] for n in plan.params}, plan.params), dtype=activations
    )


def _run(engine: Engine, rows: list[list[int]], chunk: int, slots: list[int]) -> torch.Tensor:
    """Feed sequences rows[i] (cache row slots[i]) in steps of `chunk` tokens, all rows in
    every step; the logits of every token, [len(rows), N, V]."""
    engine.reset(max(slots) + 1)
    out = []
    for start in range(0, N, chunk):
        ids = torch.tensor([row[start : start + chunk] for row in rows])
        entry = "decode" if ids.shape[1] == 1 else "prefill"
        out.append(engine.feed(entry, slots, {"ids": ids})["logits"].float().clone())
        for b in slots:
            engine.lengths[b] += ids.shape[1]
    return torch.cat(out, dim=1)


@pytest.fixture(scope="module")
def alone(engine) -> torch.Tensor:
    return _run(engine, [SEQ], 1, [0])[0]


@pytest.mark.parametrize("chunk", [2, 3, 4, 5])
def test_prefill_chunks_equal_decoding_alone(engine, alone, chunk):
    assert torch.equal(_run(engine, [SEQ], chunk, [0])[0], alone)


@pytest.mark.parametrize("batch", [2, 3, 4])
def test_a_sequence_among_others_equals_it_alone(engine, alone, batch):
    """The sequence in the last cache row, decoded (T = 1) and in chunks of 3, beside
    batch - 1 sequences of other tokens."""
    others = [[(t * (b + 2) + b) % 1024 for t in SEQ] for b in range(batch - 1)]
    slots = list(range(batch))
    for chunk in (1, 3):
        logits = _run(engine, [*others, SEQ], chunk, slots)
        assert torch.equal(logits[-1], alone), chunk
