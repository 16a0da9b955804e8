"""The V4 chat encoding against prompt strings written out by hand from the V4_REFERENCE
§14 rules (BOS as text; user turn + `<｜Assistant｜>` + `<think>`/`</think>`; assistant
turn `[reasoning</think>]content<｜end▁of▁sentence｜>`)."""

from __future__ import annotations

import pytest

from v4c.runtime.chat import REASONING_EFFORT_MAX, encode_chat
from v4c.runtime.tokenizer import load_tokenizer

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"

HISTORY = [
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
    {"role": "user", "content": "Q2"},
]


def test_single_turn_chat_mode():
    prompt = encode_chat([{"role": "user", "content": "Hello"}])
    assert prompt == BOS + "<｜User｜>Hello<｜Assistant｜></think>"


def test_thinking_mode_with_system_prompt():
    # §14's example: BOS + SYS + <｜User｜>Q<｜Assistant｜><think>
    messages = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Q"}]
    assert encode_chat(messages, thinking=True) == BOS + "SYS<｜User｜>Q<｜Assistant｜><think>"


def test_system_prompt_chat_mode():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert encode_chat(messages) == BOS + "Be brief.<｜User｜>Hi<｜Assistant｜></think>"


def test_multi_turn_chat_mode_never_shows_reasoning():
    expected = (
        BOS + "<｜User｜>Q1<｜Assistant｜></think>A1" + EOS + "<｜User｜>Q2<｜Assistant｜></think>"
    )
    assert encode_chat(HISTORY) == expected
    assert encode_chat(HISTORY, drop_thinking=False) == expected


def test_multi_turn_thinking_drops_earlier_reasoning():
    expected = (
        BOS + "<｜User｜>Q1<｜Assistant｜></think>A1" + EOS + "<｜User｜>Q2<｜Assistant｜><think>"
    )
    assert encode_chat(HISTORY, thinking=True) == expected


def test_multi_turn_thinking_keeps_reasoning_without_drop():
    expected = (
        BOS
        + "<｜User｜>Q1<｜Assistant｜><think>R1</think>A1"
        + EOS
        + "<｜User｜>Q2<｜Assistant｜><think>"
    )
    assert encode_chat(HISTORY, thinking=True, drop_thinking=False) == expected


def test_assistant_after_last_user_keeps_its_reasoning():
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A", "reasoning_content": "R"},
    ]
    expected = BOS + "<｜User｜>Q<｜Assistant｜><think>R</think>A" + EOS
    assert encode_chat(messages, thinking=True) == expected


def test_consecutive_user_messages_form_one_turn():
    messages = [{"role": "user", "content": "A"}, {"role": "user", "content": "B"}]
    assert encode_chat(messages) == BOS + "<｜User｜>A\n\nB<｜Assistant｜></think>"


def test_max_reasoning_effort_paragraph_follows_bos_in_thinking_mode_only():
    messages = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Q"}]
    tail = "SYS<｜User｜>Q<｜Assistant｜><think>"
    thinking = encode_chat(messages, thinking=True, reasoning_effort="max")
    assert thinking == BOS + REASONING_EFFORT_MAX + tail
    assert REASONING_EFFORT_MAX.startswith("Reasoning Effort: Absolute maximum")
    assert REASONING_EFFORT_MAX.endswith("left unchecked.\n\n")
    assert encode_chat(messages, thinking=True, reasoning_effort="high") == BOS + tail
    chat = encode_chat(messages, reasoning_effort="max")
    assert chat == BOS + "SYS<｜User｜>Q<｜Assistant｜></think>"


def test_encoded_prompt_tokenizes_to_reference_ids():
    ids = load_tokenizer().encode(encode_chat([{"role": "user", "content": "你好"}], thinking=True))
    assert ids == [0, 128803, 30594, 128804, 128821]  # BOS + §14's example prefix


@pytest.mark.parametrize(
    "messages,match",
    [
        (
            [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}],
            r"messages\[1\]: unknown role 'robot'",
        ),
        ([{"role": "user"}], r"messages\[0\] \(user\): missing 'content'"),
        (
            [{"role": "user", "content": ["a"]}],
            r"messages\[0\] \(user\): 'content' must be a string",
        ),
        ([{"role": "tool", "content": "42"}], r"messages\[0\]: unknown role 'tool'"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "", "tool_calls": []},
            ],
            r"messages\[1\]: 'tool_calls' is not supported",
        ),
        (
            [{"role": "user", "content": "a", "reasoning_content": "r"}],
            r"messages\[0\] \(user\): 'reasoning_content'",
        ),
        (["hello"], r"messages\[0\]: expected a dict"),
        ([], "messages is empty"),
    ],
)
def test_bad_messages_name_their_index(messages, match):
    with pytest.raises(ValueError, match=match):
        encode_chat(messages)


def test_bad_reasoning_effort():
    with pytest.raises(ValueError, match="reasoning_effort"):
        encode_chat([{"role": "user", "content": "a"}], thinking=True, reasoning_effort="extreme")
