"""Batch invariance end to end (DESIGN.md): a token's logits are bitwise the same whether it is
decoded alone, sits anywhere in a prefill chunk of T = 2..5 tokens, or its sequence shares
the step with B - 1 other sequences (B = 1..4, in any cache row), on the tiny model (vocabulary
1024) under both numerics modes, on both backends (Triton's kernels in its interpreter on a
CPU). The sequence (21 tokens) crosses the sliding window (16) and five CSA windows (4), so
the window ring, the compressor's state and the indexer's selection are read across chunk
boundaries. The interpreter takes minutes for that: its full cases are `long`, and a shorter
sequence (6 tokens, a CSA entry) checks the Triton backend in the default run. A prefill
chunk of 18 tokens (past the 16 of the Triton decode forms) runs on both backends too.

On the Triton backend a prefill chunk and a decode step run the GEMMs at different tile
shapes (and the split-K runs in one program or on several): every dot sums in 16-column
steps in a fixed order (`kernels/dots.py: dot_k16`), so the interpreter's numpy matmul, whose
BLAS may round a longer product differently by shape, gives the same bits too
(tests/codegen/test_gemm.py checks the two GEMM buckets bitwise in the default run).

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
SHORT = 6  # the Triton backend's default-run sequence: SEQ[:SHORT] (a CSA entry at 3)
MODES = {"plain": ("fp32", torch.float32), "official": ("bf16", torch.bfloat16)}
# official numerics (bf16, weights as stored) takes minutes on 2 cores, and the interpreter
# too: `pytest -m long`
CASES = [("plain", "torch"), ("official", "torch"), ("plain", "triton"), ("official", "triton")]


def make_engine(folder, numerics: str, backend: str, max_tokens: int = 5) -> Engine:
    (folder / "spec.yaml").write_text("extends: tiny.yaml\nname: tiny-inv\nvocab_size: 1024\n")
    return invariance_engine(load_spec(folder / "spec.yaml"), numerics, backend, folder,
                             max_tokens=max_tokens, max_seq=32)  # fmt: skip


def invariance_engine(spec, numerics: str, backend: str, folder, *, max_tokens: int,
                      max_seq: int, device: str = "cpu") -> Engine:  # fmt: skip
    """An engine of `spec` (random weights, as stored) returning every token's logits, for
    up to 4 rows of up to `max_tokens` tokens a step, no drafts."""
    dtype, activations = MODES[numerics]
    options = CompileOptions(
        max_batch=4, max_tokens=max_tokens, max_seq=max_seq, logits="all", max_draft=0,
        numerics=numerics, dtype=dtype,
    )  # fmt: skip
    plan = compile_spec(spec, options).plan
    weights = random_weights(spec, seed=5)
    return Engine(
        plan, as_stored({n: weights[n] for n in plan.params}, plan.params), dtype=activations,
        device=device, backend=backend, kernel_root=folder / "kernels",
    )  # fmt: skip


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(c, marks=pytest.mark.long) if c != ("plain", "torch") else c for c in CASES
    ],
    ids="-".join,
)
def engine(tmp_path_factory, request):
    return make_engine(tmp_path_factory.mktemp("invariance"), *request.param)


def _run(
    engine: Engine, rows: list[list[int]], chunk: int, slots: list[int], n: int = N
) -> torch.Tensor:
    """Feed the first `n` tokens of sequences rows[i] (cache row slots[i]) in steps of
    `chunk` tokens, all rows in every step; the logits of every token, [len(rows), n, V]."""
    engine.reset(max(slots) + 1)
    out = []
    for start in range(0, n, chunk):
        ids = torch.tensor([row[start : min(start + chunk, n)] for row in rows])
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


@pytest.mark.parametrize(
    "numerics, chunk",
    [("plain", 3), *(pytest.param(n, c, marks=pytest.mark.long) for n, c in [
        ("plain", 1), ("official", 3), ("official", 1)])],
)  # fmt: skip
def test_triton_backend_short(tmp_path, numerics, chunk):
    """The Triton backend (interpreter): the short sequence as the second of two sequences
    (in cache row 0) equals it alone, in prefill chunks of 3 (the default run's case: about
    a minute of interpreter) or decoded (T = 1): the same kernels, so a row never depends
    on the batch."""
    engine = make_engine(tmp_path, numerics, "triton")
    other = [(7 * t + 3) % 1024 for t in SEQ]
    alone = _run(engine, [SEQ], chunk, [0], SHORT)[0]
    assert torch.equal(_run(engine, [other, SEQ], chunk, [1, 0], SHORT)[1], alone)


@pytest.mark.long
def test_triton_backend_short_chunks_equal_decoding(tmp_path):
    """The short sequence prefilled in chunks of 3 against decoded alone (Triton, plain)."""
    engine = make_engine(tmp_path, "plain", "triton")
    alone = _run(engine, [SEQ], 1, [0], SHORT)
    assert torch.equal(_run(engine, [SEQ], 3, [0], SHORT), alone)


@pytest.mark.parametrize(
    "numerics, backend",
    [
        pytest.param(*c, marks=[pytest.mark.long] * (c[1] == "triton"), id="-".join(c))
        for c in CASES
    ],
)
def test_a_prefill_past_16_tokens_equals_decoding(tmp_path, numerics, backend):
    """The whole sequence (21 tokens) as a prefill chunk of 18, past the 16 tokens a row of
    the Triton decode forms (sparse attention folds its slices in a program per token, the
    indexer and the GEMMs take their prefill tiles), then one of 3, against decoded alone:
    the prefill forms keep a decode step's reduction order (the torch backend: a second or
    so a mode; the interpreter: minutes, `long`)."""
    engine = make_engine(tmp_path, numerics, backend, max_tokens=18)
    alone = _run(engine, [SEQ], 1, [0])
    assert torch.equal(_run(engine, [SEQ], 18, [0]), alone)
