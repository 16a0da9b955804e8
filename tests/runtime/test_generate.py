"""The generation loop against a scripted engine: a StepEngine whose logits make a known
token sequence per prompt, and which records every call it receives."""

from __future__ import annotations

import pytest
import torch

from v4c.runtime.generate import GenerationResult, generate
from v4c.runtime.sampler import Sampler

VOCAB = 16
EOS = 1


class ScriptedEngine:
    """Sequence i's next token is script[i][k], k = tokens it has received beyond its
    prompt. Rows of sequences that received no token this call are NaN: the loop must
    never sample them."""

    def __init__(self, scripts: list[list[int]]):
        self.scripts = scripts
        self.calls: list = []
        self.history: list[list[int]] = []
        self.prompt_lengths: list[int] = []

    def reset(self, batch: int) -> None:
        self.calls.append(("reset", batch))
        self.history = [[] for _ in range(batch)]

    def forward(self, tokens: list[list[int]]) -> torch.Tensor:
        self.calls.append(("forward", [list(t) for t in tokens]))
        if not self.prompt_lengths:
            self.prompt_lengths = [len(t) for t in tokens]
        logits = torch.full((len(tokens), VOCAB), float("nan"))
        for i, new in enumerate(tokens):
            self.history[i] += new
            if new:
                step = len(self.history[i]) - self.prompt_lengths[i]
                logits[i] = -10.0
                logits[i, self.scripts[i][step]] = 10.0
        return logits


def test_streams_in_order_and_stops_at_eos():
    engine = ScriptedEngine([[5, 6, 7, EOS, 9, 9]])
    streamed: list[tuple[int, int]] = []
    result = generate(
        engine,
        [[3, 4]],
        Sampler(),
        max_new_tokens=10,
        stop_ids={EOS},
        on_token=lambda seq, tok: streamed.append((seq, tok)),
    )
    assert result.tokens == [[5, 6, 7, EOS]]
    assert streamed == [(0, 5), (0, 6), (0, 7), (0, EOS)]
    assert result.stop_reasons == ["eos"]
    assert engine.calls == [
        ("reset", 1),
        ("forward", [[3, 4]]),
        ("forward", [[5]]),
        ("forward", [[6]]),
        ("forward", [[7]]),
    ]


def test_stops_at_max_new_tokens():
    engine = ScriptedEngine([[5, 6, 7, 8, 9]])
    result = generate(engine, [[3]], Sampler(), max_new_tokens=3, stop_ids={EOS})
    assert result.tokens == [[5, 6, 7]] and result.stop_reasons == ["length"]
    assert len(engine.calls) == 1 + 3  # reset, prefill, two decode steps: none after the last
    assert engine.history == [[3, 5, 6]]


def test_stop_id_on_the_last_allowed_token_counts_as_eos():
    result = generate(
        ScriptedEngine([[5, EOS]]), [[3]], Sampler(), max_new_tokens=2, stop_ids={EOS}
    )
    assert result.stop_reasons == ["eos"]


def test_batch_of_two_where_one_stops_early():
    engine = ScriptedEngine([[5, EOS], [6, 7, 8, 9]])
    streamed: list[tuple[int, int]] = []
    # top_k=1 with temperature: deterministic, but sampled, so a NaN row would raise
    result = generate(
        engine,
        [[2, 3, 4], [11]],
        Sampler(temperature=1.0, top_k=1, seed=0),
        max_new_tokens=4,
        stop_ids={EOS},
        on_token=lambda s, t: streamed.append((s, t)),
    )
    assert result.tokens == [[5, EOS], [6, 7, 8, 9]]
    assert result.stop_reasons == ["eos", "length"]
    assert streamed == [(0, 5), (1, 6), (0, EOS), (1, 7), (1, 8), (1, 9)]
    assert [c[1] for c in engine.calls[1:]] == [
        [[2, 3, 4], [11]],  # prefill: both prompts, different lengths
        [[5], [6]],
        [[], [7]],  # sequence 0 has finished: empty list from now on
        [[], [8]],
    ]
    assert result.prompt_tokens == [3, 1] and result.generated_tokens == [2, 4]


def test_counts_and_timings():
    result = generate(
        ScriptedEngine([[5, 6, 7, 8]] * 2), [[3], [4]], Sampler(), max_new_tokens=4, stop_ids=set()
    )
    assert result.decode_tokens == 2 * 3  # each sequence's first token comes from prefill
    assert result.prefill_s >= 0 and result.decode_s > 0
    assert result.tokens_per_s == pytest.approx(6 / result.decode_s)


def test_tokens_per_s_without_decode_steps_is_zero():
    result = GenerationResult([[5]], ["length"], [1], prefill_s=0.1, decode_s=0.0)
    assert result.tokens_per_s == 0.0


@pytest.mark.parametrize(
    "prompts,max_new,match",
    [
        ([], 4, "prompts is empty"),
        ([[1], []], 4, r"prompts\[1\] is empty"),
        ([[1]], 0, "max_new_tokens"),
    ],
)
def test_bad_inputs(prompts, max_new, match):
    with pytest.raises(ValueError, match=match):
        generate(ScriptedEngine([[2]]), prompts, Sampler(), max_new_tokens=max_new, stop_ids={EOS})


def test_wrong_logits_shape_from_engine_is_reported():
    class Broken(ScriptedEngine):
        def forward(self, tokens):
            return torch.zeros(VOCAB)

    with pytest.raises(ValueError, match="engine.forward returned logits of shape"):
        generate(Broken([[2]]), [[1]], Sampler(), max_new_tokens=2, stop_ids={EOS})
