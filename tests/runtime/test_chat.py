"""The V4 chat encoding against prompt strings written out by hand from the documented
format (V4_REFERENCE §14 and the release's encoding README: BOS as text; user turn +
`<｜Assistant｜>` + `<think>`/`</think>`; assistant turn
`[reasoning</think>]content[DSML tool calls]<｜end▁of▁sentence｜>`; tool results as
`<tool_result>` in the next user turn; developer, latest_reminder, response format and
the quick-instruction task tokens), on text and on token ids (special ids from §14)."""

from __future__ import annotations

import pytest

from v4c.runtime.chat.encode import REASONING_EFFORT_MAX, ChatError, encode_chat

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
U, A = "<｜User｜>", "<｜Assistant｜>"

HISTORY = [
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
    {"role": "user", "content": "Q2"},
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
# The tools block as the release's README documents it, with the schema line filled in.
TOOLS_BLOCK = """## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "<｜DSML｜tool_calls>" block like the following:

<｜DSML｜tool_calls>
<｜DSML｜invoke name="$TOOL_NAME">
<｜DSML｜parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</｜DSML｜parameter>
...
</｜DSML｜invoke>
<｜DSML｜invoke name="$TOOL_NAME2">
...
</｜DSML｜invoke>
</｜DSML｜tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.

Otherwise, output directly after </think> with tool calls or final response.

### Available Tool Schemas

{"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}

You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.
"""  # noqa: E501


def call(name: str, arguments: str, call_id: str = "") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- plain chat -----------------------------------------------------------------------


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
    expected = BOS + f"{U}Q1{A}</think>A1{EOS}{U}Q2{A}</think>"
    assert encode_chat(HISTORY) == expected
    assert encode_chat(HISTORY, drop_thinking=False) == expected


def test_multi_turn_thinking_drops_earlier_reasoning():
    expected = BOS + f"{U}Q1{A}</think>A1{EOS}{U}Q2{A}<think>"
    assert encode_chat(HISTORY, thinking=True) == expected


def test_multi_turn_thinking_keeps_reasoning_without_drop():
    expected = BOS + f"{U}Q1{A}<think>R1</think>A1{EOS}{U}Q2{A}<think>"
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


def test_encoded_prompt_tokenizes_to_reference_ids(tok):
    ids = tok.encode(encode_chat([{"role": "user", "content": "你好"}], thinking=True))
    assert ids == [0, 128803, 30594, 128804, 128821]  # BOS + §14's example prefix


# --- assistant edge cases -------------------------------------------------------------


@pytest.mark.parametrize("assistant", [{"content": None}, {}, {"content": ""}])
def test_assistant_content_none_or_missing_renders_empty(assistant):
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", **assistant}]
    assert encode_chat(messages) == BOS + f"{U}Q{A}</think>{EOS}"
    thinking = encode_chat(messages, thinking=True)
    assert thinking == BOS + f"{U}Q{A}<think></think>{EOS}"


def test_wo_eos_leaves_the_assistant_turn_open():
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "The answer is", "wo_eos": True},
    ]
    assert encode_chat(messages) == BOS + f"{U}Q{A}</think>The answer is"
    messages[1]["wo_eos"] = False
    assert encode_chat(messages) == BOS + f"{U}Q{A}</think>The answer is{EOS}"


def test_empty_tool_calls_are_no_tool_calls():
    plain = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    empty = [plain[0], {**plain[1], "tool_calls": []}]
    none = [plain[0], {**plain[1], "tool_calls": None}]
    assert encode_chat(empty) == encode_chat(none) == encode_chat(plain)
    assert encode_chat(plain) == BOS + f"{U}Q{A}</think>A{EOS}"


# --- tools ----------------------------------------------------------------------------


def test_tools_on_the_system_message():
    messages = [
        {"role": "system", "content": "SYS", "tools": [WEATHER]},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    expected = BOS + "SYS\n\n" + TOOLS_BLOCK + f"{U}Weather in Paris?{A}</think>"
    assert encode_chat(messages) == expected


def test_assistant_tool_calls_are_a_dsml_block():
    arguments = '{"city": "Paris", "days": 3, "units": {"t": "C"}, "exact": true}'
    messages = [
        {"role": "user", "content": "Q"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [call("get_weather", arguments), call("now", "{}")],
        },
    ]
    block = (
        "\n\n<｜DSML｜tool_calls>\n"
        '<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="units" string="false">{"t": "C"}</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="exact" string="false">true</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n"
        '<｜DSML｜invoke name="now">\n'
        "\n"
        "</｜DSML｜invoke>\n"
        "</｜DSML｜tool_calls>"
    )
    assert encode_chat(messages) == BOS + f"{U}Q{A}</think>Let me check.{block}{EOS}"


def test_tool_call_arguments_that_are_not_json_become_one_string_parameter():
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": None, "tool_calls": [call("run", "ls -l")]},
    ]
    block = (
        '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="run">\n'
        '<｜DSML｜parameter name="arguments" string="true">ls -l</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
    )
    assert encode_chat(messages) == BOS + f"{U}Q{A}</think>{block}{EOS}"


def test_tool_results_join_the_next_user_turn_in_call_order():
    calls = [call("get_weather", '{"city": "Paris"}', "c1"), call("get_weather", "{}", "c2")]
    messages = [
        {"role": "system", "content": "SYS", "tools": [WEATHER]},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "", "reasoning_content": "R", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        {"role": "tool", "tool_call_id": "c1", "content": "sun"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    text = encode_chat(messages, thinking=True)
    results = f"{U}<tool_result>sun</tool_result>\n\n<tool_result>rain</tool_result>"
    # tools switch reasoning-drop off: the first turn opens <think> and keeps "R"
    assert text.startswith(BOS + "SYS\n\n" + TOOLS_BLOCK + f"{U}Q{A}<think>R</think>\n\n")
    assert text.endswith(f"</｜DSML｜tool_calls>{EOS}{results}\n\nAnd tomorrow?{A}<think>")


def test_tool_result_as_content_blocks():
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "", "tool_calls": [call("f", "{}")]},
        {
            "role": "tool",
            "content": [{"type": "text", "text": "one"}, {"type": "image"}, {"type": "text"}],
        },
    ]
    text = encode_chat(messages)
    assert text.endswith(f"{U}<tool_result>one\n\n[Unsupported image]\n\n</tool_result>{A}</think>")


def test_tools_switch_reasoning_drop_off():
    tools = [{"role": "system", "content": "", "tools": [WEATHER]}]
    with_tools = encode_chat(tools + HISTORY, thinking=True)
    assert with_tools.endswith(f"{U}Q1{A}<think>R1</think>A1{EOS}{U}Q2{A}<think>")
    assert with_tools == encode_chat(tools + HISTORY, thinking=True, drop_thinking=False)


# --- developer, latest_reminder, response format --------------------------------------


def test_developer_is_a_user_turn_with_tools_and_response_format():
    messages = [
        {
            "role": "developer",
            "content": "Search.",
            "tools": [WEATHER],
            "response_format": {"type": "json_object"},
        }
    ]
    expected = (
        BOS
        + f"{U}Search.\n\n"
        + TOOLS_BLOCK
        + "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:"
        + '\n{"type": "json_object"}'
        + f"{A}</think>"
    )
    assert encode_chat(messages) == expected


def test_developer_before_the_last_user_turn_is_dropped_with_reasoning():
    messages = [
        {"role": "developer", "content": "D"},
        {"role": "assistant", "content": "A", "reasoning_content": "R"},
        {"role": "user", "content": "Q"},
    ]
    assert encode_chat(messages, thinking=True) == BOS + f"A{EOS}{U}Q{A}<think>"
    assert encode_chat(messages) == BOS + f"{U}D{A}</think>A{EOS}{U}Q{A}</think>"
    kept = encode_chat(messages, thinking=True, drop_thinking=False)
    assert kept == BOS + f"{U}D{A}<think>R</think>A{EOS}{U}Q{A}<think>"


def test_response_format_on_the_system_message():
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True}}
    messages = [
        {"role": "system", "content": "SYS", "response_format": schema},
        {"role": "user", "content": "Q"},
    ]
    expected = (
        BOS
        + "SYS\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to "
        + 'reply:\n{"type": "json_schema", "json_schema": {"name": "answer", "strict": true}}'
        + f"{U}Q{A}</think>"
    )
    assert encode_chat(messages) == expected


def test_latest_reminder():
    before = [
        {"role": "system", "content": "SYS"},
        {"role": "latest_reminder", "content": "Today is Monday."},
        {"role": "user", "content": "Q"},
    ]
    assert encode_chat(before) == BOS + f"SYS<｜latest_reminder｜>Today is Monday.{U}Q{A}</think>"
    after = [before[2], before[1]]  # a reminder after the user turn follows its prompt
    assert encode_chat(after) == BOS + f"{U}Q{A}</think><｜latest_reminder｜>Today is Monday."


# --- quick-instruction tasks ----------------------------------------------------------


@pytest.mark.parametrize(
    "task, token", [("query", 128830), ("authority", 128831), ("domain", 128832)]
)
def test_task_token_replaces_the_generation_prompt(tok, task, token):
    text = encode_chat([{"role": "user", "content": "Q", "task": task}], thinking=True)
    assert text == BOS + f"{U}Q<｜{task}｜>"
    assert tok.encode(text) == [0, 128803, *tok.encode("Q"), token]


@pytest.mark.parametrize("thinking, opener", [(False, 128822), (True, 128821)])
def test_action_task_keeps_the_prompt(tok, thinking, opener):
    text = encode_chat([{"role": "user", "content": "Q", "task": "action"}], thinking=thinking)
    assert text == BOS + f"{U}Q{A}{'<think>' if thinking else '</think>'}<｜action｜>"
    assert tok.encode(text)[-3:] == [128804, opener, 128829]


def test_title_task_after_the_first_reply_and_no_reasoning_after_a_task():
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A", "task": "title"},
    ]
    assert encode_chat(messages) == BOS + f"{U}Q{A}</think>A{EOS}<｜title｜>"
    answered = [{"role": "user", "content": "Q", "task": "domain"}, {"role": "assistant"}]
    answered[1]["content"] = "science"
    assert encode_chat(answered, thinking=True) == BOS + f"{U}Q<｜domain｜>science{EOS}"


def test_read_url_task(tok):
    # the README's form: {prompt}<｜extracted_url｜>{url}<｜read_url｜>
    content = "Read this<｜extracted_url｜>https://a.b/c"
    text = encode_chat([{"role": "user", "content": content, "task": "read_url"}])
    assert text == BOS + f"{U}{content}<｜read_url｜>"
    url = tok.encode("https://a.b/c")
    assert tok.encode(text) == [0, 128803, *tok.encode("Read this"), 128844, *url, 128845]


# --- context (incremental rendering) --------------------------------------------------


@pytest.mark.parametrize("thinking", [False, True])
def test_context_renders_only_the_continuation(thinking):
    context = HISTORY[:2]
    tail = encode_chat(HISTORY[2:], thinking=thinking, context=context, drop_thinking=False)
    whole = encode_chat(HISTORY, thinking=thinking, drop_thinking=False)
    assert not tail.startswith(BOS) and whole.endswith(tail)
    assert tail == f"{U}Q2{A}" + ("<think>" if thinking else "</think>")


# --- token ids ------------------------------------------------------------------------


def test_tool_turn_token_ids(tok):
    """Every marker of the DSML block and the turn tokens are single ids (§14)."""
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "", "tool_calls": [call("f", '{"k": "v"}')]},
        {"role": "tool", "content": "ok"},
        {"role": "latest_reminder", "content": "R"},
    ]
    dsml = 128825
    pieces = [0, 128803, "Q", 128804, 128822, "\n\n<", dsml, "tool_calls>\n<", dsml]
    pieces += ['invoke name="f">\n<', dsml, 'parameter name="k" string="true">v</', dsml]
    pieces += ["parameter>\n</", dsml, "invoke>\n</", dsml, "tool_calls>", 1, 128803]
    pieces += ["<tool_result>ok</tool_result>", 128804, 128822, 128828, "R"]
    expected = [i for p in pieces for i in ([p] if isinstance(p, int) else tok.encode(p))]
    assert tok.encode(encode_chat(messages)) == expected


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages,match",
    [
        (
            [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}],
            r"messages\[1\]: unknown role 'robot'",
        ),
        ([{"role": "user", "content": None}], r"messages\[0\] \(user\): 'content' must be"),
        (
            [{"role": "user", "content": ["a"]}],
            r"messages\[0\] \(user\): 'content' must be a string",
        ),
        ([{"role": "developer", "content": ""}], r"messages\[0\] \(developer\): .*non-empty"),
        ([{"role": "latest_reminder"}], r"messages\[0\] \(latest_reminder\): 'content'"),
        (
            [{"role": "user", "content": "a", "reasoning_content": "r"}],
            r"messages\[0\] \(user\): 'reasoning_content' belongs on a assistant",
        ),
        ([{"role": "user", "content": "a", "tools": [WEATHER]}], r"'tools' belongs on a system"),
        ([{"role": "user", "content": "a", "task": "search"}], r"unknown task 'search'"),
        ([{"role": "system", "tools": [{"name": "f"}]}], r"tools\[0\] must be"),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}],
            r"tool_calls\[0\]\.function needs a string 'name' and 'arguments'",
        ),
        (
            [{"role": "assistant", "tool_calls": [call("f", "[1, 2]")]}],
            "tool call arguments must be a JSON object",
        ),
        ([{"role": "assistant", "wo_eos": "yes"}], r"'wo_eos' must be true or false"),
        (["hello"], r"messages\[0\]: expected a dict"),
        ([], "messages is empty"),
    ],
)
def test_bad_messages_name_their_index(messages, match):
    with pytest.raises(ChatError, match=match):
        encode_chat(messages)


def test_bad_reasoning_effort():
    with pytest.raises(ChatError, match="reasoning_effort"):
        encode_chat([{"role": "user", "content": "a"}], thinking=True, reasoning_effort="extreme")
