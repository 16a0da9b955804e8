"""The completion parser: generated text -> {content, reasoning_content, tool_calls}.

Oracles: the release README's worked example, completions written by hand from the
documented DSML format, and round trips through `encode_chat` (render an assistant
message after a user turn, cut the prompt off, parse the rest back)."""

from __future__ import annotations

import json

import pytest

from v4c.runtime.chat.encode import ChatError, encode_chat
from v4c.runtime.chat.parse import parse_completion, parse_reply, starts_in_reasoning

EOS = "<｜end▁of▁sentence｜>"
QUESTION = [{"role": "user", "content": "Q"}]


def call(name: str, arguments: str) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def test_readme_example():
    completion = "Simple arithmetic.</think>2 + 2 = 4." + EOS
    assert parse_completion(completion, thinking=True) == {
        "role": "assistant",
        "content": "2 + 2 = 4.",
        "reasoning_content": "Simple arithmetic.",
        "tool_calls": [],
    }


def test_chat_mode_is_all_content():
    assert parse_completion("Hi there" + EOS)["content"] == "Hi there"
    assert parse_completion(EOS) == {
        "role": "assistant",
        "content": "",
        "reasoning_content": "",
        "tool_calls": [],
    }


def test_tool_calls_by_hand():
    completion = (
        "R</think>Checking."
        "\n\n<｜DSML｜tool_calls>\n"
        '<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="city" string="true">Paris "Nord"</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="days" string="false">[1, 2]</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n"
        '<｜DSML｜invoke name="now">\n'
        "\n"
        "</｜DSML｜invoke>\n"
        "</｜DSML｜tool_calls>" + EOS
    )
    message = parse_completion(completion, thinking=True)
    assert (message["reasoning_content"], message["content"]) == ("R", "Checking.")
    assert message["tool_calls"] == [
        call("get_weather", '{"city": "Paris \\"Nord\\"", "days": [1, 2]}'),
        call("now", "{}"),
    ]


ROUND_TRIPS = [
    {"content": "Plain answer."},
    {"content": "多行\n\n答案 ✓", "reasoning_content": "想一想\n再想"},
    {"content": "", "reasoning_content": "R", "tool_calls": [call("f", '{"a": 1, "b": "x"}')]},
    {
        "content": "Two calls.",
        "tool_calls": [
            call("search", '{"q": "v4 <chat>", "n": 3, "opts": {"safe": true}}'),
            call("now", "{}"),
        ],
    },
    {"content": "", "tool_calls": [call("echo", '{"text": "line1\\nline2", "x": null}')]},
]


@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize("reply", ROUND_TRIPS)
def test_round_trip(reply, thinking):
    prompt = encode_chat(QUESTION, thinking=thinking)
    whole = encode_chat([*QUESTION, {"role": "assistant", **reply}], thinking=thinking)
    assert whole.startswith(prompt)
    message = parse_completion(whole[len(prompt) :], thinking=thinking)
    assert message["content"] == reply["content"]
    assert message["reasoning_content"] == (reply.get("reasoning_content", "") if thinking else "")
    assert message["tool_calls"] == reply.get("tool_calls", [])  # arguments as json.dumps writes
    # and the parsed message renders back to the same text
    again = encode_chat([*QUESTION, message], thinking=thinking)
    assert again == whole


@pytest.mark.parametrize("reply", ROUND_TRIPS)
def test_round_trip_on_token_ids(tok, reply):
    """What the model emits is ids: the ids after the prompt's decode to the same text."""
    prompt = tok.encode(encode_chat(QUESTION, thinking=True))
    whole = encode_chat([*QUESTION, {"role": "assistant", **reply}], thinking=True)
    ids = tok.encode(whole)
    assert ids[: len(prompt)] == prompt and ids[-1] == tok.eos_id
    message = parse_completion(tok.decode(ids[len(prompt) :]), thinking=True)
    assert tok.encode(encode_chat([*QUESTION, message], thinking=True)) == ids


def test_round_trip_normalises_argument_json():
    reply = {"content": "", "tool_calls": [call("f", '{ "a" :1,"b":{"c":[true]} }')]}
    whole = encode_chat([*QUESTION, {"role": "assistant", **reply}])
    message = parse_completion(whole[len(encode_chat(QUESTION)) :])
    arguments = message["tool_calls"][0]["function"]["arguments"]
    assert arguments == '{"a": 1, "b": {"c": [true]}}'
    assert json.loads(arguments) == json.loads(reply["tool_calls"][0]["function"]["arguments"])


@pytest.mark.parametrize(
    "completion, thinking, match",
    [
        ("no end", False, "no end-of-sentence token"),
        ("reasoning only" + EOS, True, "no </think>"),
        ("a" + EOS + "b", False, "text after the end-of-sentence token"),
        ("a</think>b" + EOS, False, "special token '</think>'"),
        ("<think>r</think>a" + EOS, True, "special token '<think>'"),
        (
            '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="f">\n'
            '<｜DSML｜parameter name="k" string="true">1</｜DSML｜parameter>\n'
            '<｜DSML｜parameter name="k" string="true">2</｜DSML｜parameter>\n'
            "</｜DSML｜invoke>\n</｜DSML｜tool_calls>" + EOS,
            False,
            "parameter 'k' twice",
        ),
        (
            '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="f">\n'
            '<｜DSML｜parameter name="k" string="maybe">1</｜DSML｜parameter>\n'
            "</｜DSML｜invoke>\n</｜DSML｜tool_calls>" + EOS,
            False,
            "bad parameter",
        ),
        (
            "\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls>tail" + EOS,
            False,
            "after the tool calls",
        ),
    ],
)
def test_malformed_completions(completion, thinking, match):
    with pytest.raises(ChatError, match=match):
        parse_completion(completion, thinking=thinking)


def test_reply_cut_short_is_read_as_far_as_it_goes():
    assert parse_reply("The answ")[0]["content"] == "The answ"
    assert parse_reply("The answer." + EOS) == (parse_completion("The answer." + EOS), None)
    message, problem = parse_reply("Still thinking", thinking=True)
    assert (message["reasoning_content"], message["content"], problem) == (
        "Still thinking",
        "",
        None,
    )
    message, problem = parse_reply("Done thinking?" + EOS, thinking=True)  # ended, yet no </think>
    assert message["reasoning_content"] == "Done thinking?" and "no </think>" in problem
    cut = parse_reply("R</think>Half an ans", thinking=True)
    assert cut == (parse_completion("R</think>Half an ans" + EOS, thinking=True), None)


def test_malformed_reply_is_kept_as_plain_content():
    message, problem = parse_reply("x</think>y<think>z" + EOS)
    assert message["content"] == "xyz" and "special token" in problem


def test_a_completion_starts_in_reasoning_where_the_prompt_leaves_think_open():
    assert starts_in_reasoning(encode_chat(QUESTION, thinking=True))
    assert not starts_in_reasoning(encode_chat(QUESTION))
    prefix = {"role": "assistant", "content": "The", "reasoning_content": "R", "wo_eos": True}
    assert not starts_in_reasoning(encode_chat([*QUESTION, prefix], thinking=True))
    action = [{"role": "user", "content": "Q", "task": "action"}]
    assert starts_in_reasoning(encode_chat(action, thinking=True))
