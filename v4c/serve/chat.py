"""A chat request -> the V4 prompt: messages, tools, tool_choice and thinking.

Why here and not in the encoder: these are OpenAI's request-level knobs, mapped onto the
official encoding (`runtime.chat.encode`), which knows only messages:
- `tools` go on the first system message (one is opened, empty, when there is none), where
  the official encoder writes the DSML tools block; `tool_choice: "none"` leaves them out;
- `tool_choice: "required"` or a named function cannot be asked of the model in words, so
  the reply is started for it: the prompt ends with the opening of the DSML block (and of
  the named invoke), and the parse of the reply starts from that text. Such a reply has no
  reasoning (the block follows `</think>`);
- thinking is on when `chat_template_kwargs` says `thinking` (or `enable_thinking`), else
  when a `reasoning_effort` is given; `reasoning_effort: "max"` adds the official paragraph.
"""

from __future__ import annotations

from dataclasses import dataclass

import jsonschema

from v4c.runtime.chat.format import DSML, TOOL_CALLS_OPEN, ChatError
from v4c.runtime.chat.encode import encode_chat
from v4c.serve.errors import APIError
from v4c.serve.protocol import ChatRequest, NamedToolChoice


@dataclass
class ChatPrompt:
    text: str  # the whole prompt, a forced opening included
    thinking: bool  # the reply starts inside the reasoning
    forced: str  # the text the reply is taken to start with ("" unless a tool is forced)


def chat_prompt(request: ChatRequest) -> ChatPrompt:
    messages = [m.as_dict() for m in request.messages]
    choice = request.tool_choice
    if request.tools and choice != "none":
        _check_schemas(request)
        tools = [t.model_dump(exclude_none=True) for t in request.tools]
        system = next((m for m in messages if m["role"] == "system"), None)
        if system is None:
            messages.insert(0, system := {"role": "system", "content": ""})
        system["tools"] = tools
    forced = ""
    if choice == "required" or isinstance(choice, NamedToolChoice):
        forced = TOOL_CALLS_OPEN
        if isinstance(choice, NamedToolChoice):
            forced += f'<{DSML}invoke name="{choice.function.name}">\n'
    thinking = _thinking(request) and not forced
    effort = "max" if request.reasoning_effort == "max" else None
    try:
        text = encode_chat(messages, thinking=thinking, reasoning_effort=effort)
    except ChatError as err:
        # the right types, but a conversation the V4 format refuses: unprocessable
        raise APIError(422, str(err), param="messages", code="invalid_messages") from None
    return ChatPrompt(text + forced, thinking, forced)


def _thinking(request: ChatRequest) -> bool:
    kwargs = request.chat_template_kwargs or {}
    for key in ("thinking", "enable_thinking"):
        if key in kwargs:
            if not isinstance(kwargs[key], bool):
                raise APIError(400, f"chat_template_kwargs.{key} must be true or false",
                               param=f"chat_template_kwargs.{key}")  # fmt: skip
            return kwargs[key]
    return request.reasoning_effort is not None


def _check_schemas(request: ChatRequest) -> None:
    """Each tool's parameters must be a JSON Schema of an object (what the model is told)."""
    for i, tool in enumerate(request.tools):
        schema, param = tool.function.parameters, f"tools[{i}].function.parameters"
        if schema is None:
            continue
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as err:
            raise APIError(400, f"{param}: not a JSON Schema: {err.message}", param=param,
                           code="invalid_schema") from None  # fmt: skip
        if schema.get("type", "object") != "object":
            message = f"{param}: the schema must describe an object, not {schema['type']!r}"
            raise APIError(400, message, param=param, code="invalid_schema")
