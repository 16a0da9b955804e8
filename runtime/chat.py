"""The DeepSeek-V4 chat encoding: a list of messages -> the prompt text.

Why plain code: V4 ships no Jinja chat template. Its prompt is built by the official
`encoding_dsv4.py`, and the model answers well only when the prompt is that text to the
character. This module follows its rules (V4_REFERENCE §14); BOS is part of the text,
so the tokenizer must not add one.

    BOS [effort paragraph] {system}
    <｜User｜>{q1}<｜Assistant｜></think>{a1}<｜end▁of▁sentence｜>     earlier turn
    <｜User｜>{q2}<｜Assistant｜><think>                              thinking mode
    <｜User｜>{q2}<｜Assistant｜></think>                             chat mode

- A user turn ends with the generation prompt `<｜Assistant｜>` when it is the last
  message or an assistant message follows; consecutive user messages form one turn,
  their contents joined by a blank line (as `encoding_dsv4.py` merges them).
- An assistant turn is `{content}<｜end▁of▁sentence｜>`. In thinking mode it is preceded by
  `{reasoning}</think>` (and its user turn ends with `<think>`) when it comes after the
  last user message, or for every turn when `drop_thinking` is off; earlier turns'
  reasoning is dropped otherwise. Chat mode never shows reasoning.
- `reasoning_effort="max"` in thinking mode puts a fixed paragraph right after BOS;
  "high" and None add nothing.

Out of scope, rejected with a ValueError: tools, tool calls and tool results (the DSML
format), response-format blocks, the `developer` and `latest_reminder` roles and the
quick-instruction task tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"

# The paragraph the model was trained with for maximum reasoning effort (a prompt
# constant of `encoding_dsv4.py`, reproduced to the character).
REASONING_EFFORT_MAX = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption "
    "is left unchecked.\n\n"
)

_ROLES = ("system", "user", "assistant")
_EFFORTS = (None, "high", "max")
_UNSUPPORTED_KEYS = ("tools", "tool_calls", "tool_call_id", "response_format", "task")


@dataclass(frozen=True)
class _Turn:
    role: str
    content: str
    reasoning: str = ""


def encode_chat(
    messages: list[dict],
    *,
    thinking: bool = False,
    reasoning_effort: str | None = None,
    drop_thinking: bool = True,
) -> str:
    """The prompt text for `messages` (dicts with "role", "content" and, for assistant
    turns, an optional "reasoning_content")."""
    if reasoning_effort not in _EFFORTS:
        raise ValueError(f"reasoning_effort must be one of {_EFFORTS}, got {reasoning_effort!r}")
    if not messages:
        raise ValueError("messages is empty: a prompt needs at least one message")
    turns = _merge_user_runs([_checked(i, m) for i, m in enumerate(messages)])
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=-1)
    parts = [BOS]
    if thinking and reasoning_effort == "max":
        parts.append(REASONING_EFFORT_MAX)
    for i, turn in enumerate(turns):
        # reasoning is shown for this turn (assistant) / the turn it prompts (user)
        shows_reasoning = thinking and (not drop_thinking or i >= last_user)
        if turn.role == "system":
            parts.append(turn.content)
        elif turn.role == "user":
            parts.append(USER + turn.content)
            following = turns[i + 1].role if i + 1 < len(turns) else "assistant"
            if following == "assistant":
                parts.append(ASSISTANT + (THINK if shows_reasoning else END_THINK))
        else:
            reasoning = turn.reasoning + END_THINK if shows_reasoning else ""
            parts.append(reasoning + turn.content + EOS)
    return "".join(parts)


def _checked(index: int, message: object) -> _Turn:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise ValueError(f"{where}: expected a dict with 'role' and 'content', got {message!r}")
    role = message.get("role")
    if role not in _ROLES:
        raise ValueError(f"{where}: unknown role {role!r}; expected one of {', '.join(_ROLES)}")
    for key in _UNSUPPORTED_KEYS:
        if key in message:
            raise ValueError(f"{where}: {key!r} is not supported (no tool or DSML encoding)")
    content = message.get("content")
    if content is None:
        raise ValueError(f"{where} ({role}): missing 'content'")
    if not isinstance(content, str):
        raise ValueError(f"{where} ({role}): 'content' must be a string, got {content!r}")
    reasoning = message.get("reasoning_content")
    if reasoning is not None and (role != "assistant" or not isinstance(reasoning, str)):
        raise ValueError(f"{where} ({role}): 'reasoning_content' must be an assistant's string")
    return _Turn(role, content, reasoning or "")


def _merge_user_runs(turns: list[_Turn]) -> list[_Turn]:
    merged: list[_Turn] = []
    for turn in turns:
        if turn.role == "user" and merged and merged[-1].role == "user":
            merged[-1] = _Turn("user", merged[-1].content + "\n\n" + turn.content)
        else:
            merged.append(turn)
    return merged
