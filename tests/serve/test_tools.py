"""Tool calls and reasoning end to end: a scripted engine writes what V4 writes (a DSML
tool-call block, a reasoning block closed by </think>), the real server parses it, and the
`openai` client reads `tool_calls` with JSON arguments, `reasoning_content` and `content`,
whole and streamed. The prompts the engine is fed are checked against the official encoding
(`encode_chat`): tools on the system message, the forced opening of a named tool call."""

from __future__ import annotations

import json

import pytest

from tests.serve.scripted import ScriptedEngine, serving
from v4c.runtime.chat.dsml import render_tool_calls
from v4c.runtime.chat.encode import encode_chat
from v4c.runtime.chat.format import DSML, TOOL_CALLS_OPEN

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {
            "zone": {"type": "string"}}}}},
]  # fmt: skip
ASK = [{"role": "user", "content": "Weather in Paris for 3 days, and the time in UTC?"}]
CALLS = [("get_weather", '{"city": "Paris", "days": 3}'), ("get_time", '{"zone": "UTC"}')]


@pytest.fixture
def server_for(tok):
    def make(reply: str, **options):
        engine = ScriptedEngine(tok.vocab_size, [*tok.encode(reply), tok.eos_id])
        return engine, serving(engine, tok, name="m", **options)

    return make


def _fed_prompt(engine, tok) -> str:
    return tok.decode(engine.fed[0][: len(engine.fed[0]) - engine.steps_of[0]])


def test_two_tool_calls_whole_and_streamed(server_for, tok):
    engine, running = server_for("Let me check." + render_tool_calls(CALLS))
    with running as server:
        reply = server.client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me check."
        calls = [(c.function.name, json.loads(c.function.arguments)) for c in
                 choice.message.tool_calls]  # fmt: skip
        assert calls == [("get_weather", {"city": "Paris", "days": 3}),
                         ("get_time", {"zone": "UTC"})]  # fmt: skip
        assert len({c.id for c in choice.message.tool_calls}) == 2
        system = {"role": "system", "content": "", "tools": TOOLS}
        assert _fed_prompt(engine, tok) == encode_chat([system, *ASK])

        chunks = list(server.client.chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, stream=True))  # fmt: skip
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert content == "Let me check." and DSML not in content
        deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
        assert [(d.index, d.function.name, json.loads(d.function.arguments)) for d in deltas] == [
            (i, name, json.loads(arguments)) for i, (name, arguments) in enumerate(CALLS)
        ]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        one = server.client.chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, parallel_tool_calls=False
        )
        assert [c.function.name for c in one.choices[0].message.tool_calls] == ["get_weather"]


def test_reasoning_is_returned_apart_from_content(server_for, tok):
    engine, running = server_for("Two and two make four.</think>It is 4.")
    with running as server:
        ask = [{"role": "user", "content": "2 + 2?"}]
        reply = server.client.chat.completions.create(
            model="m", messages=ask, extra_body={"chat_template_kwargs": {"thinking": True}}
        )
        message = reply.choices[0].message
        assert message.content == "It is 4." and reply.choices[0].finish_reason == "stop"
        assert message.reasoning_content == "Two and two make four."
        reasoning = len(tok.encode("Two and two make four."))
        assert reply.usage.completion_tokens_details.reasoning_tokens == reasoning
        assert _fed_prompt(engine, tok) == encode_chat(ask, thinking=True)

        chunks = list(server.client.chat.completions.create(
            model="m", messages=ask, reasoning_effort="high", stream=True))  # fmt: skip
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        said = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
        assert said == "Two and two make four."
        assert "".join(d.content or "" for d in deltas) == "It is 4."

        plain = server.client.chat.completions.create(model="m", messages=ask)  # thinking off
        assert _fed_prompt(engine, tok) == encode_chat(ask)
        assert getattr(plain.choices[0].message, "reasoning_content", None) is None


def test_a_named_tool_choice_starts_the_call(server_for, tok):
    rest = f'<{DSML}parameter name="city" string="true">Oslo</{DSML}parameter>\n'
    rest += f"</{DSML}invoke>\n</{DSML}tool_calls>"
    engine, running = server_for(rest)
    with running as server:
        choice = {"type": "function", "function": {"name": "get_weather"}}
        reply = server.client.chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, tool_choice=choice
        )
        (call,) = reply.choices[0].message.tool_calls
        assert (call.function.name, json.loads(call.function.arguments)) == (
            "get_weather", {"city": "Oslo"})  # fmt: skip
        system = {"role": "system", "content": "", "tools": TOOLS}
        forced = TOOL_CALLS_OPEN + f'<{DSML}invoke name="get_weather">\n'
        assert _fed_prompt(engine, tok) == encode_chat([system, *ASK]) + forced

        server.client.chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, tool_choice="none"
        )
        assert _fed_prompt(engine, tok) == encode_chat(ASK)  # no tools block


def test_tool_results_are_encoded_in_the_history(server_for, tok):
    engine, running = server_for("It is sunny.")
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": n, "arguments": a}}
            for n, a in CALLS[:1]]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 20 C"},
    ]  # fmt: skip
    with running as server:
        reply = server.client.chat.completions.create(model="m", messages=history, tools=TOOLS)
        assert reply.choices[0].message.content == "It is sunny."
        system = {"role": "system", "content": "", "tools": TOOLS}
        assert _fed_prompt(engine, tok) == encode_chat([system, *history])
        assert "<tool_result>sunny, 20 C</tool_result>" in _fed_prompt(engine, tok)


def test_v4_message_keys_reach_the_encoder(server_for, tok):
    engine, running = server_for("Paris")
    ask = [{"role": "user", "content": "The capital of France?", "task": "query"},
           {"role": "latest_reminder", "content": "Be brief."}]  # fmt: skip
    with running as server:
        server.client.chat.completions.create(model="m", messages=ask)
        assert _fed_prompt(engine, tok) == encode_chat(ask)


def test_choices_effort_and_logprobs_when_streamed(server_for, tok):
    engine, running = server_for("Fine.</think>Done.")
    ask = [{"role": "user", "content": "Go."}]
    with running as server:
        chunks = list(server.client.chat.completions.create(
            model="m", messages=ask, n=2, reasoning_effort="max", logprobs=True,
            top_logprobs=1, stream=True))  # fmt: skip
        assert _fed_prompt(engine, tok) == encode_chat(ask, thinking=True, reasoning_effort="max")
        for index in (0, 1):
            mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
            assert mine[0].delta.role == "assistant" and mine[-1].finish_reason == "stop"
            said = "".join(getattr(c.delta, "reasoning_content", None) or "" for c in mine)
            assert said == "Fine." and "".join(c.delta.content or "" for c in mine) == "Done."
            entries = [e for c in mine if c.logprobs for e in c.logprobs.content]
            assert len(entries) == len(tok.encode("Fine.</think>Done.")) + 1  # and the EOS
            assert all(e.logprob == 0.0 and e.top_logprobs[0].logprob == 0.0 for e in entries)
