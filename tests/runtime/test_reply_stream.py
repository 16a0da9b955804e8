"""The chat reply parsed while it streams says what `parse_completion` says of the whole
reply, however the text is cut into deltas, and never lets a marker (`</think>`, DSML)
into the reasoning or the content."""

from __future__ import annotations

import json

import pytest

from v4c.runtime.chat.dsml import render_tool_calls
from v4c.runtime.chat.format import DSML, EOS
from v4c.runtime.chat.parse import parse_completion
from v4c.runtime.chat.stream import ReplyStream

CALLS = [("get_weather", '{"city": "Paris", "days": 3}'), ("now", "{}")]
REPLIES = [
    (False, "Plain answer with < and </ in it."),
    (True, "Think <step> one.</think>Then answer."),
    (False, "Calling." + render_tool_calls(CALLS)),
    (True, "Need tools.</think>" + render_tool_calls(CALLS[:1])),
]


def _streamed(text: str, thinking: bool, cut: int) -> dict:
    stream, out = ReplyStream(thinking=thinking), []
    for at in range(0, len(text), cut):
        out += stream.feed(text[at : at + cut])
    out += stream.finish()
    message = {"content": "", "reasoning_content": "", "tool_calls": []}
    for kind, value in out:
        if kind == "tool_call":
            message["tool_calls"].append(value)
        else:
            assert DSML not in value and "</think>" not in value
            message["content" if kind == "content" else "reasoning_content"] += value
    return message


@pytest.mark.parametrize("thinking,text", REPLIES)
@pytest.mark.parametrize("cut", [1, 2, 7, 1000])
def test_streamed_parse_equals_the_whole_parse(thinking, text, cut):
    whole = parse_completion(text + EOS, thinking=thinking)
    got = _streamed(text, thinking, cut)
    assert got["content"] == whole["content"]
    assert got["reasoning_content"] == whole["reasoning_content"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in
            got["tool_calls"]] == [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                                   for c in whole["tool_calls"]]  # fmt: skip


def test_a_broken_tool_block_is_kept_as_content():
    stream = ReplyStream(thinking=False)
    pieces = stream.feed(f"Hi\n\n<{DSML}tool_calls>\ngarbage") + stream.finish()
    assert "".join(v for k, v in pieces if k == "content") == "Hi\n\n<tool_calls>\ngarbage"
    assert stream.problem
