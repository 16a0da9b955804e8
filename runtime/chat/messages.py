"""One chat message, checked: the fields the V4 format reads, each validated by role;
and a conversation read from a JSON file.

Why a separate step: `encode_chat` renders from these typed records, so the rendering
code never guesses at a missing key or a wrong type, and a bad message is reported with
its index and field before any text is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from v4c.paths import need_file
from v4c.runtime.chat.format import TASK_TOKENS, ChatError

ROLES = ("system", "user", "assistant", "tool", "developer", "latest_reminder")
_KEY_ROLES = {  # keys the format reads, and the roles they belong to
    "reasoning_content": ("assistant",),
    "tool_calls": ("assistant",),
    "tools": ("system", "developer"),
    "response_format": ("system", "developer"),
    "tool_call_id": ("tool",),
}


@dataclass
class Message:
    role: str
    content: str = ""
    reasoning: str = ""
    functions: list[dict] = field(default_factory=list)  # the `function` of each tool
    response_format: object = None
    calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments JSON)
    call_ids: list[str] = field(default_factory=list)
    tool_call_id: str = ""
    task: str | None = None
    wo_eos: bool = False


def read_messages(path: Path) -> list[dict]:
    """A conversation file: a JSON list of OpenAI-style messages, each checked here so a
    bad one is reported with the file before a model is loaded."""
    need_file(path, "JSON conversation file", ChatError)
    try:
        messages = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ChatError(f"{path}: cannot read a JSON conversation: {err}") from err
    if not isinstance(messages, list) or not messages:
        raise ChatError(f"{path}: expected a non-empty JSON list of messages")
    try:
        for i, message in enumerate(messages):
            checked_message(i, message)
    except ChatError as err:
        raise ChatError(f"{path}: {err}") from err
    return messages


def checked_message(index: int, message: object) -> Message:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise ChatError(f"{where}: expected a dict with 'role' and 'content', got {message!r}")
    role = message.get("role")
    if role not in ROLES:
        raise ChatError(f"{where}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    where = f"{where} ({role})"
    for key, roles in _KEY_ROLES.items():
        if key in message and message[key] is not None and role not in roles:
            raise ChatError(f"{where}: {key!r} belongs on a {' or '.join(roles)} message")
    task = message.get("task")
    if task is not None and task not in TASK_TOKENS:
        raise ChatError(f"{where}: unknown task {task!r}; expected one of {', '.join(TASK_TOKENS)}")
    wo_eos = message.get("wo_eos", False)
    if not isinstance(wo_eos, bool):
        raise ChatError(f"{where}: 'wo_eos' must be true or false, got {wo_eos!r}")
    calls = _tool_calls(where, message.get("tool_calls"))
    return Message(
        role=role,
        content=_content(where, role, message),
        reasoning=_string(where, message, "reasoning_content"),
        functions=_functions(where, message.get("tools")),
        response_format=message.get("response_format"),
        calls=[(name, arguments) for name, arguments, _ in calls],
        call_ids=[call_id for _, _, call_id in calls],
        tool_call_id=_string(where, message, "tool_call_id"),
        task=task,
        wo_eos=wo_eos,
    )


def _content(where: str, role: str, message: dict) -> str:
    content = message.get("content")
    if role == "tool" and isinstance(content, list):  # content blocks: text parts kept
        return "\n\n".join(_tool_block(where, b) for b in content)
    if role == "developer" and not content:
        raise ChatError(f"{where}: a developer message needs a non-empty 'content'")
    if content is None:
        missing = "content" not in message and role != "latest_reminder"
        if missing or role in ("system", "assistant"):  # rendered as ""
            return ""
        raise ChatError(f"{where}: 'content' must be a string, got None")
    if not isinstance(content, str):
        raise ChatError(f"{where}: 'content' must be a string, got {content!r}")
    return content


def _tool_block(where: str, block: object) -> str:
    if not isinstance(block, dict):
        raise ChatError(f"{where}: a content block must be a dict, got {block!r}")
    if block.get("type") == "text":
        return _string(where, block, "text")
    return f"[Unsupported {block.get('type')}]"


def _string(where: str, message: dict, key: str) -> str:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise ChatError(f"{where}: {key!r} must be a string, got {value!r}")
    return value or ""


def _functions(where: str, tools: object) -> list[dict]:
    if not tools:
        return []
    if not isinstance(tools, list):
        raise ChatError(f"{where}: 'tools' must be a list, got {tools!r}")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
            raise ChatError(
                f"{where}: tools[{i}] must be {{'type': 'function', 'function': {{...}}}}"
            )
    return [tool["function"] for tool in tools]


def _tool_calls(where: str, calls: object) -> list[tuple[str, str, str]]:
    """(name, arguments, id) of each call; `[]` and None mean no calls."""
    if not calls:
        return []
    if not isinstance(calls, list):
        raise ChatError(f"{where}: 'tool_calls' must be a list, got {calls!r}")
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise ChatError(f"{where}: tool_calls[{i}] must have a 'function' dict")
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise ChatError(
                f"{where}: tool_calls[{i}].function needs a string 'name' and 'arguments' "
                f"(a JSON object as a string), got {function!r}"
            )
        out.append((name, arguments, call.get("id") or function.get("id") or ""))
    return out
