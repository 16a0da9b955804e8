"""The fixed strings of the DeepSeek-V4 chat format: special tokens and prompt texts.

Why one module: the encoder (`encode.py`), the DSML tool-call block (`dsml.py`) and the
completion parser (`parse.py`) must agree on every marker to the character; each
string is defined here once. The prompt texts are constants the model was trained with
(`encoding_dsv4.py` of the V4 release, V4_REFERENCE §14), reproduced exactly.
"""

from __future__ import annotations

import json

from v4c.errors import V4CError
from v4c.runtime.tokenizer import BOS_TEXT as BOS
from v4c.runtime.tokenizer import EOS_TEXT as EOS

__all__ = ["BOS", "EOS"]

USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
LATEST_REMINDER = "<｜latest_reminder｜>"
THINK = "<think>"
END_THINK = "</think>"
DSML = "｜DSML｜"

# Quick-instruction tasks: a message's `task` puts this token where generation starts.
TASK_TOKENS = {
    "action": "<｜action｜>",
    "query": "<｜query｜>",
    "authority": "<｜authority｜>",
    "domain": "<｜domain｜>",
    "title": "<｜title｜>",
    "read_url": "<｜read_url｜>",
}

# In thinking mode with reasoning_effort="max", right after BOS.
REASONING_EFFORT_MAX = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption "
    "is left unchecked.\n\n"
)

# A system or developer message's `response_format`, after a blank line; then its JSON.
RESPONSE_FORMAT_PROMPT = (
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
)

# The tools block of a system or developer message, after a blank line: the DSML syntax,
# then one JSON line per function schema, then the closing sentence.
TOOLS_PROMPT_HEAD = f"""## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools \
by writing a "<{DSML}tool_calls>" block like the following:

<{DSML}tool_calls>
<{DSML}invoke name="$TOOL_NAME">
<{DSML}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{DSML}parameter>
...
</{DSML}invoke>
<{DSML}invoke name="$TOOL_NAME2">
...
</{DSML}invoke>
</{DSML}tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types \
(numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by {THINK}), you MUST output your complete reasoning \
inside {THINK}...{END_THINK} BEFORE any tool calls or final response.

Otherwise, output directly after {END_THINK} with tool calls or final response.

### Available Tool Schemas

"""
TOOLS_PROMPT_TAIL = (
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke "
    "tool calls.\n"
)

# The tool-call block of an assistant message (follows its content).
TOOL_CALLS_OPEN = f"\n\n<{DSML}tool_calls>\n"
TOOL_CALLS_CLOSE = f"\n</{DSML}tool_calls>"
TOOL_RESULT = "<tool_result>{}</tool_result>"


class ChatError(V4CError, ValueError):
    """A message list the V4 format cannot render, or a completion it cannot parse; the
    message names the message index and field, or the place in the completion."""


def to_json(value: object) -> str:
    """JSON as the format writes it: non-ASCII kept, the default `, ` and `: ` separators."""
    return json.dumps(value, ensure_ascii=False)
