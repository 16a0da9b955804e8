"""DSML, the V4 tool-call markup: tool schemas into a prompt, tool calls to text and back.

Why its own module: the encoder writes assistant tool calls and the completion parser
reads the model's, and the two must be exact inverses. The block, after the content:

    \\n\\n<｜DSML｜tool_calls>
    <｜DSML｜invoke name="get_weather">
    <｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>
    <｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>
    </｜DSML｜invoke>
    </｜DSML｜tool_calls>

A string argument is written as is (`string="true"`), any other value as JSON. Calls
use the OpenAI shape, `{"type": "function", "function": {"name", "arguments"}}` with
`arguments` a JSON object as a string; arguments that are not JSON are written as one
string parameter named "arguments", as the official encoder does.
"""

from __future__ import annotations

import json
import re

from v4c.runtime.chat.format import (
    DSML,
    TOOL_CALLS_CLOSE,
    TOOL_CALLS_OPEN,
    TOOLS_PROMPT_HEAD,
    TOOLS_PROMPT_TAIL,
    ChatError,
    to_json,
)

_INVOKE = f"<{DSML}invoke"
_INVOKE_END = f"</{DSML}invoke>"
_PARAMETER = f"<{DSML}parameter"
_PARAMETER_END = f"</{DSML}parameter>"
_BLOCK_END = f"</{DSML}tool_calls>"
_NAME = re.compile(r'\s*name="(.*?)">\n\n?', re.DOTALL)
_PARAM = re.compile(r' name="(.*?)" string="(true|false)">(.*?)<\n?', re.DOTALL)


def render_tools(functions: list[dict]) -> str:
    """The tools block: the DSML instructions, then each function schema as one JSON line."""
    return TOOLS_PROMPT_HEAD + "\n".join(to_json(f) for f in functions) + TOOLS_PROMPT_TAIL


def render_tool_calls(calls: list[dict]) -> str:
    """The block an assistant message ends with (before EOS), from (name, arguments) pairs."""
    invokes = [
        f'{_INVOKE} name="{name}">\n{_render_arguments(arguments)}\n{_INVOKE_END}'
        for name, arguments in calls
    ]
    return TOOL_CALLS_OPEN + "\n".join(invokes) + TOOL_CALLS_CLOSE


def _render_arguments(arguments: str) -> str:
    try:
        values = json.loads(arguments)
    except json.JSONDecodeError:
        values = {"arguments": arguments}
    if not isinstance(values, dict):
        raise ChatError(f"tool call arguments must be a JSON object, got {arguments!r}")
    return "\n".join(
        f'{_PARAMETER} name="{key}" string="{"true" if isinstance(value, str) else "false"}">'
        f"{value if isinstance(value, str) else to_json(value)}{_PARAMETER_END}"
        for key, value in values.items()
    )


def parse_tool_calls(text: str, start: int) -> tuple[list[dict], int]:
    """The calls of the block whose `<｜DSML｜tool_calls` ends at `start`, and the index
    after its `</｜DSML｜tool_calls>` (or the end of a text that stops after a call)."""
    calls: list[dict] = []
    at = start
    while at < len(text):
        gap, marker, at = read_until(text, at, (_INVOKE, _BLOCK_END))
        if gap != ">\n":
            raise ChatError(f"tool calls at {at}: expected '>' and a newline, got {gap!r}")
        if marker == _BLOCK_END:
            break
        if marker is None:
            raise ChatError("tool calls: the block ends without </｜DSML｜tool_calls>")
        call, at = _parse_invoke(text, at, len(calls))
        calls.append(call)
    return calls, at


def _parse_invoke(text: str, at: int, index: int) -> tuple[dict, int]:
    head, marker, at = read_until(text, at, (_PARAMETER, _INVOKE_END[:-1]))
    name = _NAME.fullmatch(head)
    if name is None:
        raise ChatError(f"tool call {index}: bad invoke name {head!r}")
    arguments: dict[str, tuple[str, bool]] = {}
    while marker == _PARAMETER:
        body, _, at = read_until(text, at, (_PARAMETER_END[1:-1],))
        param = _PARAM.fullmatch(body)
        if param is None:
            raise ChatError(f"tool call {index} ({name[1]}): bad parameter {body!r}")
        key, is_string, value = param.groups()
        if key in arguments:
            raise ChatError(f"tool call {index} ({name[1]}): parameter {key!r} twice")
        arguments[key] = (value, is_string == "true")
        gap, marker, at = read_until(text, at, (_PARAMETER, _INVOKE_END[:-1]))
        if gap != ">\n":
            raise ChatError(f"tool call {index} ({name[1]}): expected '>\\n', got {gap!r}")
    pairs = (f"{to_json(k)}: {to_json(v) if s else v}" for k, (v, s) in arguments.items())
    function = {"name": name[1], "arguments": "{" + ", ".join(pairs) + "}"}
    return {"type": "function", "function": function}, at


def read_until(text: str, at: int, markers: tuple[str, ...]) -> tuple[str, str | None, int]:
    """(the text from `at` to the first marker, that marker, the index after it); with no
    marker left: (the rest, None, len(text))."""
    found = [(p, m) for m in markers if (p := text.find(m, at)) != -1]
    if not found:
        return text[at:], None, len(text)
    pos, marker = min(found, key=lambda pm: pm[0])
    return text[at:pos], marker, pos + len(marker)
