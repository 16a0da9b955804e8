"""The DeepSeek-V4 chat encoding: a list of messages -> the prompt text.

Why plain code: V4 ships no Jinja chat template. Its prompt is built by the official
`encoding_dsv4.py`, and the model answers well only when the prompt is that text to the
character. This module follows its rules (V4_REFERENCE §14); BOS is part of the text,
so the tokenizer must not add one. Messages use the OpenAI shape.

    BOS [effort paragraph] {system}[\\n\\n{tools block}][\\n\\n{response format}]
    <｜User｜>{q1}<｜Assistant｜></think>{a1}[\\n\\n{DSML tool calls}]<｜end▁of▁sentence｜>
    <｜User｜><tool_result>{r1}</tool_result>\\n\\n{q2}<｜Assistant｜><think>   thinking mode

- Roles: system, user, assistant, tool, developer (a user turn that may carry tools and a
  response format) and latest_reminder (`<｜latest_reminder｜>{content}`).
- Consecutive user messages form one turn, joined by a blank line; a `tool` message
  becomes a `<tool_result>` block of the user turn after the assistant's calls, the
  results put in the order of those calls (by `tool_call_id`).
- A user or developer turn ends with the generation prompt `<｜Assistant｜>` and
  `<think>`/`</think>` when the next message is an assistant or a latest_reminder one,
  or when it is the last message.
- Thinking mode: an assistant turn starts with `{reasoning}</think>` when it follows the
  last user turn, or always when `drop_thinking` is off; earlier reasoning is dropped
  (and so are developer messages before the last user turn). Tools on any message turn
  `drop_thinking` off, since a tool-using conversation needs its whole reasoning.
- An assistant message with `wo_eos: true` ends without EOS (a prefix the model goes
  on from); content None or missing renders as "", `tool_calls: []` as no calls.
- A quick-instruction `task` (action, query, authority, domain, title, read_url) on the
  message where generation starts replaces the generation prompt by its token; "action"
  keeps the prompt and appends `<｜action｜>`; the assistant turn after a task message
  shows no reasoning.
- `reasoning_effort="max"` in thinking mode puts a fixed paragraph right after BOS.
- `context`: messages already rendered (e.g. held by the engine); only `messages` are
  rendered, with no BOS, as the continuation of the context's text.

Unknown message keys (`name`, `id`, ...) are ignored, as the official encoder does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from v4c.runtime.chat.dsml import render_tool_calls, render_tools
from v4c.runtime.chat.format import (
    ASSISTANT,
    BOS,
    END_THINK,
    EOS,
    LATEST_REMINDER,
    REASONING_EFFORT_MAX,
    RESPONSE_FORMAT_PROMPT,
    TASK_TOKENS,
    THINK,
    TOOL_RESULT,
    USER,
    ChatError,
    to_json,
)
from v4c.runtime.chat.messages import Message, checked_message

__all__ = ["REASONING_EFFORT_MAX", "ChatError", "encode_chat"]

_EFFORTS = (None, "high", "max")
_USER_TURNS = ("user", "developer")


@dataclass
class _Turn:
    """A message after tool results and consecutive user messages are merged."""

    message: Message
    # a user turn's parts: (None, text) for a user message, (tool call id, text) for a result
    blocks: list[tuple[str | None, str]] = field(default_factory=list)


def encode_chat(
    messages: list[dict],
    *,
    thinking: bool = False,
    reasoning_effort: str | None = None,
    drop_thinking: bool = True,
    context: list[dict] | None = None,
    add_bos: bool = True,
) -> str:
    """The prompt text for `messages` (OpenAI-shaped dicts; see the module docstring).
    Errors name a message by its index in `context + messages`."""
    if reasoning_effort not in _EFFORTS:
        raise ChatError(f"reasoning_effort must be one of {_EFFORTS}, got {reasoning_effort!r}")
    context = context or []
    if not messages and not context:
        raise ChatError("messages is empty: a prompt needs at least one message")
    checked = [checked_message(i, m) for i, m in enumerate(context + messages)]
    before = _merged(checked[: len(context)])
    turns = before + _merged(checked[len(context) :])
    _sort_tool_results(turns)
    drop = drop_thinking and not any(t.message.functions for t in turns)
    start = len(before)
    if thinking and drop:  # the context's own drop decides where the new text starts
        turns, start = _without_dropped(turns), len(_without_dropped(before))
    text = [BOS] if add_bos and not context else []
    for i in range(start, len(turns)):
        text.append(_render(i, turns, thinking, drop, reasoning_effort))
    return "".join(text)


def _merged(messages: list[Message]) -> list[_Turn]:
    """Tool results join the user turn before them (or open one); a user message joins
    the user turn before it unless that turn carries a task."""
    turns: list[_Turn] = []
    for m in messages:
        last = turns[-1] if turns and turns[-1].message.role == "user" else None
        if m.role == "tool":
            block = (m.tool_call_id, m.content)
            if last is not None:
                last.blocks.append(block)
            else:
                turns.append(_Turn(Message("user"), [block]))
        elif m.role == "user":
            if last is not None and last.message.task is None:
                last.blocks.append((None, m.content))
            else:
                turns.append(_Turn(m, [(None, m.content)]))
        else:
            turns.append(_Turn(m))
    return turns


def _sort_tool_results(turns: list[_Turn]) -> None:
    """Put each user turn's tool results in the order of the latest assistant's calls."""
    order: dict[str, int] = {}
    for turn in turns:
        if turn.message.role == "assistant" and turn.message.calls:
            order = {cid: i for i, cid in enumerate(turn.message.call_ids) if cid}
        results = [b for b in turn.blocks if b[0] is not None]
        if len(results) > 1 and order:
            ranked = iter(sorted(results, key=lambda b: order.get(b[0], 0)))
            turn.blocks = [next(ranked) if b[0] is not None else b for b in turn.blocks]


def _without_dropped(turns: list[_Turn]) -> list[_Turn]:
    """Thinking mode with drop_thinking: developer messages before the last user turn go."""
    last_user = _last_user(turns)
    return [t for i, t in enumerate(turns) if t.message.role != "developer" or i >= last_user]


def _last_user(turns: list[_Turn]) -> int:
    return max((i for i, t in enumerate(turns) if t.message.role in _USER_TURNS), default=-1)


def _render(i: int, turns: list[_Turn], thinking: bool, drop: bool, effort: str | None) -> str:
    m = turns[i].message
    last_user = _last_user(turns)
    out = [REASONING_EFFORT_MAX] if i == 0 and thinking and effort == "max" else []
    if m.role == "system":
        out += [m.content, *_extras(m)]
    elif m.role == "developer":
        out += [USER, m.content, *_extras(m)]
    elif m.role == "user":
        blocks = [
            text if cid is None else TOOL_RESULT.format(text) for cid, text in turns[i].blocks
        ]
        out += [USER, "\n\n".join(blocks)]
    elif m.role == "latest_reminder":
        out += [LATEST_REMINDER, m.content]
    else:  # assistant
        after_task = i > 0 and turns[i - 1].message.task is not None
        if thinking and not after_task and (not drop or i > last_user):
            out += [m.reasoning, END_THINK]
        out.append(m.content)
        if m.calls:
            out.append(render_tool_calls(m.calls))
        if not m.wo_eos:
            out.append(EOS)
    following = turns[i + 1].message.role if i + 1 < len(turns) else None
    if following in (None, "assistant", "latest_reminder"):
        out.append(_generation_prompt(m, thinking and (not drop or i >= last_user), thinking))
    return "".join(out)


def _generation_prompt(m: Message, opens_thinking: bool, thinking: bool) -> str:
    if m.task == "action":
        return ASSISTANT + (THINK if thinking else END_THINK) + TASK_TOKENS["action"]
    if m.task is not None:
        return TASK_TOKENS[m.task]
    if m.role in _USER_TURNS:
        return ASSISTANT + (THINK if opens_thinking else END_THINK)
    return ""


def _extras(m: Message) -> list[str]:
    """A system or developer message's tools block and response-format block."""
    out = ["\n\n" + render_tools(m.functions)] if m.functions else []
    if m.response_format:
        out.append("\n\n" + RESPONSE_FORMAT_PROMPT + to_json(m.response_format))
    return out
