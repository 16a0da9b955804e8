"""Penalties and stop strings (runtime/penalties.py), with numbers worked by hand, and
through `generate` and `v4c run` / `v4c chat` on an engine whose logits are fixed."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import v4c.cli.run as run_cli
from tests.runtime.test_chat_loop import ScriptedEngine, Session
from v4c.cli import app
from v4c.errors import SamplingError
from v4c.runtime.chat.encode import encode_chat
from v4c.runtime.generate import generate
from v4c.runtime.penalties import Penalties, StopText, cut_at_stop
from v4c.runtime.sampler import Sampler


def test_penalties_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [1.0, 1.0, 1.0, 1.0]])
    # row 0: prompt [0], reply [1, 3, 3]; row 1: nothing seen
    got = Penalties(repetition=2.0).apply(logits, [[0], []], [[1, 3, 3], []])
    assert got.tolist() == [[1.0, -2.0, 0.5, 1.5], [1.0, 1.0, 1.0, 1.0]]
    got = Penalties(frequency=0.5, presence=0.25).apply(logits, [[0], []], [[1, 3, 3], []])
    # token 1: -1 - 0.5 - 0.25; token 3: 3 - 2 x 0.5 - 0.25; the prompt's token 0 untouched
    assert got.tolist() == [[2.0, -1.75, 0.5, 1.75], [1.0, 1.0, 1.0, 1.0]]
    assert not Penalties().active
    with pytest.raises(SamplingError, match="frequency penalty must be in"):
        Penalties(frequency=3.0)


def test_stop_text_holds_back_only_a_possible_start():
    stop = StopText(["END", "\n\n"])
    assert stop.push("Hello E") == "Hello"  # "E" may start END; "Hello " ... the space too
    assert stop.push("N") == " "
    assert stop.push("Dgame") == "" and stop.stopped
    assert stop.text[: stop.shown] == "Hello "
    plain = StopText([])
    assert plain.push("ab") == "ab" and plain.flush() == ""
    assert cut_at_stop("a\n\nb END", ["END", "\n\n"]) == ("a", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


class Fixed:
    """An engine whose logits always favour token 5, then 4, then 3 (of 8)."""

    programs: dict = {}

    def reset(self, batch):
        pass

    def forward(self, tokens):
        return torch.tensor([[0.0, 0, 0, 1.0, 2.0, 3.0, 0, 0]] * len(tokens))


def test_generate_applies_the_penalties_each_step():
    out = generate(Fixed(), [[0]], Sampler(), max_new_tokens=4, stop_ids=set())
    assert out.tokens == [[5, 5, 5, 5]]
    out = generate(Fixed(), [[0]], Sampler(), max_new_tokens=4, stop_ids=set(),
                   penalties=Penalties(frequency=1.5))  # fmt: skip
    # step 1: 5 (3.0); step 2: 5 at 1.5 < 4 at 2.0 -> 4; step 3: 5 1.5, 4 0.5, 3 1.0 -> 5;
    # step 4: 5 at 0.0, 4 at 0.5, 3 at 1.0 -> 3
    assert out.tokens == [[5, 4, 5, 3]]


def test_stop_string_and_penalty_options_in_run_and_chat(monkeypatch, tok):
    replies = ["Hello there! More", "Second"]
    script = [t for text in replies for t in [*tok.encode(text), tok.eos_id]]
    engine = ScriptedEngine(tok.vocab_size, script[: len(tok.encode(replies[0])) + 1])
    monkeypatch.setattr(run_cli, "open_cli_session", lambda *_, **__: (Session(engine, tok), 4096))
    out = CliRunner().invoke(app, ["run", "--prompt", "Hi", "--temperature", "0", "--stop", "!"])
    assert out.exit_code == 0, out.output
    assert out.stdout == "Hello there\n" and "new (stop)" in out.stderr
    out = CliRunner().invoke(app, ["run", "--prompt", "Hi", "--repetition-penalty", "0"])
    assert out.exit_code == 2 and "--repetition-penalty" in out.output
    engine = ScriptedEngine(tok.vocab_size, script)
    monkeypatch.setattr(run_cli, "open_cli_session", lambda *_, **__: (Session(engine, tok), 4096))
    out = CliRunner().invoke(app, ["chat", "--temperature", "0", "--stop", " there"],
                             input="Hi\nAgain\n")  # fmt: skip
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("Hello\n")
    # the kept reply is the text before the stop string, and what the engine holds (all
    # but the token that completed the stop string) extends into turn 2's rendering
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
               {"role": "user", "content": "Again"}]  # fmt: skip
    second = tok.encode(encode_chat(history))
    assert [reset for reset, _ in engine.prefills] == [True, False]
    assert engine.held[: len(second)] == second
