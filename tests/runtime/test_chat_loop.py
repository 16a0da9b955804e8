"""`v4c chat`'s loop on a scripted engine: the history it keeps is the official one (the
parsed reply, rendered by `encode_chat`), and the engine is fed only what that history
adds, or the whole of it again where the rendering of earlier turns changed.

The engine stands in for the model: it answers a fixed script of tokens and records
what it is fed, so the test sees exactly the sequence the engine holds each turn."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import v4c.cli.run as run_cli
from v4c.cli import app, main
from v4c.runtime.chat.encode import encode_chat


class ScriptedEngine:
    programs: dict = {}  # no draft entry point: speculation is off

    def __init__(self, vocab: int, script: list[int]):
        self.vocab, self.script = vocab, list(script)
        self.held: list[int] = []  # the sequence since the last reset
        self.prefills: list[tuple[bool, list[int]]] = []  # (after a reset, tokens fed)

    def reset(self, batch: int) -> None:
        assert batch == 1
        self.held, self._reset = [], True

    def forward(self, tokens: list[list[int]]) -> torch.Tensor:
        if len(tokens[0]) > 1 or not self.held or self._reset:
            self.prefills.append((self._reset, list(tokens[0])))
        self._reset = False
        self.held += tokens[0]
        logits = torch.zeros(1, self.vocab)
        logits[0, self.script.pop(0)] = 1.0
        return logits


class Session:
    def __init__(self, engine, tokenizer):
        self.engine, self.tokenizer = engine, tokenizer
        self.spec = SimpleNamespace(name="scripted", vocab_size=tokenizer.vocab_size)


def chat(monkeypatch, tok, replies: list[str], *args: str) -> tuple[ScriptedEngine, str]:
    script = [t for text in replies for t in [*tok.encode(text), tok.eos_id]]
    engine = ScriptedEngine(tok.vocab_size, script)
    monkeypatch.setattr(run_cli, "open_cli_session", lambda *_, **__: (Session(engine, tok), 4096))
    lines = "".join(f"{line}\n" for line in ("Hi", "Again", ""))
    out = CliRunner().invoke(app, ["chat", "--temperature", "0", *args], input=lines)
    assert out.exit_code == 0, out.output
    assert not engine.script  # every scripted token was generated
    return engine, out.output


def test_thinking_history_drops_the_reasoning_and_feeds_it_again(monkeypatch, tok):
    engine, output = chat(
        monkeypatch, tok, ["Let me see</think>Hello!", "R2</think>Bye"], "--thinking"
    )
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning_content": "Let me see"},
        {"role": "user", "content": "Again"},
    ]
    second = tok.encode(encode_chat(history, thinking=True))
    assert "Let me see" not in tok.decode(second)  # the official history of turn 2
    # turn 2 renders turn 1 without its reasoning, so the engine starts again
    assert [reset for reset, _ in engine.prefills] == [True, True]
    assert engine.prefills[1][1] == second
    assert engine.held == second + tok.encode("R2</think>Bye")  # the last EOS is not fed
    assert "Let me see</think>Hello!" in output  # streamed as generated


def test_chat_mode_feeds_only_the_new_turn(monkeypatch, tok):
    engine, _ = chat(monkeypatch, tok, ["Hello!", "Bye"])
    first = tok.encode(encode_chat([{"role": "user", "content": "Hi"}]))
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
    ]
    second = tok.encode(encode_chat(history))
    assert [reset for reset, _ in engine.prefills] == [True, False]
    assert engine.prefills[0][1] == first
    assert engine.prefills[1][1] == second[len(first) + len(tok.encode("Hello!")) :]
    assert engine.held == second + tok.encode("Bye")


def test_unparsable_reply_is_said_and_kept_as_plain_content(monkeypatch, tok):
    engine, output = chat(monkeypatch, tok, ["a<think>b", "c"])
    assert "not in the chat format" in output
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "ab"},
        {"role": "user", "content": "Again"},
    ]
    assert engine.prefills[-1] == (True, tok.encode(encode_chat(history)))


def test_run_json_prints_the_parsed_tool_call(monkeypatch, tok, tmp_path):
    reply = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="x" '
    reply += 'string="false">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>'
    engine = ScriptedEngine(tok.vocab_size, [*tok.encode(reply), tok.eos_id])
    monkeypatch.setattr(run_cli, "open_cli_session", lambda *_, **__: (Session(engine, tok), 4096))
    conversation = [
        {
            "role": "system",
            "content": "",
            "tools": [{"type": "function", "function": {"name": "f"}}],
        },
        {"role": "user", "content": "Call f."},
    ]
    path = tmp_path / "conversation.json"
    path.write_text(json.dumps(conversation))
    out = CliRunner().invoke(app, ["run", "--messages", str(path), "--json", "--temperature", "0"])
    assert out.exit_code == 0, out.output
    assert engine.prefills == [(True, tok.encode(encode_chat(conversation)))]
    message = json.loads(out.stdout.strip().splitlines()[-1])
    assert message["tool_calls"] == [
        {"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]


@pytest.mark.parametrize(
    "content, args, message",
    [
        ('[{"role": "robot"}]', (), "messages[0]: unknown role 'robot'"),
        ("{", (), "cannot read a JSON conversation"),
        ("[]", (), "expected a non-empty JSON list of messages"),
        ('[{"role": "user"}]', ("--prompt", "x"), "--prompt and --messages: give one of them"),
        ('[{"role": "user"}]', ("--raw",), "--messages with --raw: a conversation needs the chat"),
    ],
)
def test_bad_conversation_is_a_user_error(tmp_path, capsys, content, args, message):
    path = tmp_path / "conversation.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        main(["run", "--messages", str(path), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def session_chat(monkeypatch, tok, replies, lines, *args, limit=4096):
    """`v4c chat` on a scripted engine fed `lines`; (engine, stdout, stderr)."""
    script = [t for text in replies for t in [*tok.encode(text), tok.eos_id]]
    engine = ScriptedEngine(tok.vocab_size, script)
    monkeypatch.setattr(run_cli, "open_cli_session", lambda *_, **__: (Session(engine, tok), limit))
    out = CliRunner().invoke(
        app, ["chat", "--temperature", "0", *args], input="".join(f"{x}\n" for x in lines)
    )
    assert out.exit_code == 0, out.output
    assert not engine.script  # every scripted reply was generated
    return engine, out.stdout, out.stderr


def test_an_empty_line_is_nothing_and_commands_steer_the_chat(monkeypatch, tok):
    lines = ["", "Hi", "  ", "/thinking", "/help", "/nope", "/clear", "/system Be brief.",
             "Again", "/exit", "never sent"]  # fmt: skip
    engine, _, err = session_chat(monkeypatch, tok, ["Hello!", "R</think>Bye"], lines)
    assert "\nchat with scripted (max_seq 4096 tokens): one message a line;" in err
    assert "[thinking on]" in err and "/system TEXT" in err and "[unknown command '/nope']" in err
    assert "[conversation cleared]" in err and "[system prompt set; conversation cleared]" in err
    # the second turn: the new system prompt, thinking on, the first turn forgotten
    second = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Again"}]
    assert engine.prefills[-1] == (True, tok.encode(encode_chat(second, thinking=True)))
    assert len(engine.prefills) == 2  # /exit ended it: "never sent" was not


def test_system_option_is_the_first_message(monkeypatch, tok):
    engine, _, _ = session_chat(monkeypatch, tok, ["Hello!"], ["Hi"], "--system", "You are v4c.")
    first = [{"role": "system", "content": "You are v4c."}, {"role": "user", "content": "Hi"}]
    assert engine.prefills == [(True, tok.encode(encode_chat(first)))]


def test_a_conversation_outgrowing_max_seq_drops_its_oldest_turns(monkeypatch, tok):
    """max_seq holds about two turns here: the third drops the first, said on stderr; a
    message too long for max_seq alone is refused and the chat goes on."""
    turn = [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Hello!"}]
    # three turns leave room for 3 new tokens, not the 4 of --max-new-tokens
    limit = len(tok.encode(encode_chat([*turn, *turn, *turn[:1]]))) + 2
    long = " ".join(["word"] * limit)
    lines = ["One", "Two", long, "Three"]
    engine, _, err = session_chat(
        monkeypatch, tok, ["Hello!"] * 3, lines, "--max-new-tokens", "4", limit=limit
    )
    assert "[not sent: the prompt does not fit:" in err
    assert f"[dropped the 1 oldest turn: the conversation outgrew max_seq {limit} tokens]" in err
    kept = [
        {"role": "user", "content": "Two"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Three"},
    ]
    assert engine.prefills[-1] == (True, tok.encode(encode_chat(kept)))


def test_a_line_that_is_not_utf8_is_not_sent_and_the_chat_goes_on(monkeypatch, tok):
    engine = ScriptedEngine(tok.vocab_size, [*tok.encode("Hello!"), tok.eos_id])
    monkeypatch.setattr(run_cli, "open_cli_session", lambda *_, **__: (Session(engine, tok), 4096))
    out = CliRunner().invoke(app, ["chat", "--temperature", "0"], input=b"Bad\xff\nHi\n")
    assert out.exit_code == 0, out.output
    assert "[not sent: " in out.stderr and "not UTF-8 text" in out.stderr
    assert engine.prefills == [(True, tok.encode(encode_chat([{"role": "user", "content": "Hi"}])))]


def test_a_line_the_model_cannot_embed_is_not_sent_and_the_chat_goes_on(monkeypatch, tok):
    session = Session(ScriptedEngine(tok.vocab_size, []), tok)
    session.spec.vocab_size = 1000  # smaller than the tokenizer's ids
    monkeypatch.setattr(run_cli, "open_cli_session", lambda *_, **__: (session, 4096))
    out = CliRunner().invoke(app, ["chat"], input="Hi\n/thinking\n")
    assert out.exit_code == 0, out.output
    assert "[not sent: the prompt has token id " in out.stderr and "[thinking on]" in out.stderr


def test_a_long_prefill_is_said_before_the_wait(monkeypatch, tok):
    engine = ScriptedEngine(tok.vocab_size, [*tok.encode("Hello!"), tok.eos_id])
    engine.max_tokens = 2  # the plan's prefill step
    monkeypatch.setattr(run_cli, "open_cli_session", lambda *_, **__: (Session(engine, tok), 4096))
    out = CliRunner().invoke(app, ["run", "--prompt", "Hi", "--temperature", "0"])
    assert out.exit_code == 0, out.output
    n = len(tok.encode(encode_chat([{"role": "user", "content": "Hi"}])))
    assert f"[prefill: {n} tokens in {-(-n // 2)} steps of up to 2]" in out.stderr
