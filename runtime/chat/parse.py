"""Generated text -> the assistant message it encodes: `{content, reasoning_content,
tool_calls}` (the counterpart of the official `parse_message_from_completion_text`).

Why: a chat keeps the parsed message, not the raw text, in its history; rendered again
by `encode_chat`, that message gives back the official prompt (earlier reasoning
dropped, tool calls as DSML). A completion, as the model writes it after the prompt:

    [{reasoning}</think>]{content}[\\n\\n<｜DSML｜tool_calls>...</｜DSML｜tool_calls>]<｜end▁of▁sentence｜>

(`</think>` only in thinking mode). `parse_completion` accepts what the official parser
accepts and raises ChatError where it refuses; `parse_reply` is the forgiving form for a
chat loop, where a reply may be cut short by the token limit.
"""

from __future__ import annotations

from v4c.runtime.chat.dsml import parse_tool_calls, read_until
from v4c.runtime.chat.format import BOS, DSML, END_THINK, EOS, THINK, TOOL_CALLS_OPEN, ChatError

_TOOLS_START = TOOL_CALLS_OPEN[: -len(">\n")]  # "\n\n<｜DSML｜tool_calls"
_NOT_IN_TEXT = (BOS, EOS, THINK, END_THINK, DSML)


def parse_completion(text: str, *, thinking: bool = False) -> dict:
    """The assistant message of a whole completion (ending with EOS, or with its tool calls)."""
    reasoning, at = "", 0
    if thinking:
        reasoning, marker, at = read_until(text, 0, (END_THINK, _TOOLS_START))
        if marker != END_THINK:
            raise ChatError("completion: thinking mode, but no </think> ends the reasoning")
    content, marker, at = read_until(text, at, (EOS, _TOOLS_START))
    calls: list[dict] = []
    if marker == _TOOLS_START:
        calls, at = parse_tool_calls(text, at)
        rest, marker, at = read_until(text, at, (EOS,))
        if rest:
            raise ChatError(f"completion: text after the tool calls: {rest!r}")
    elif marker is None:
        raise ChatError("completion: no end-of-sentence token (was it cut short?)")
    if at != len(text):
        raise ChatError(f"completion: text after the end-of-sentence token: {text[at:]!r}")
    for token in _NOT_IN_TEXT:
        if token in content or token in reasoning:
            raise ChatError(f"completion: special token {token!r} inside the reasoning or content")
    return {
        "role": "assistant",
        "content": content,
        "reasoning_content": reasoning,
        "tool_calls": calls,
    }


def starts_in_reasoning(prompt: str) -> bool:
    """Whether a completion of `prompt` begins inside a reasoning block (the prompt's last
    `<think>` is still open), so that its parse must find `</think>` first."""
    return prompt.rfind(THINK) > prompt.rfind(END_THINK)


def parse_reply(text: str, *, thinking: bool = False) -> tuple[dict, str | None]:
    """(the message, None) for a well-formed reply; else (a best reading, why not).

    A reply cut short by the token limit (no EOS) is parsed as if it had ended there; a
    thinking reply cut before `</think>` is all reasoning. Anything else malformed is kept
    whole as content without its special tokens, so the chat goes on with what the model
    said, and the reason is returned.
    """
    cut = not text.endswith(EOS)
    whole = text + EOS if cut else text
    try:
        return parse_completion(whole, thinking=thinking), None
    except ChatError as err:
        problem = str(err)
    body = whole[: -len(EOS)]
    if thinking and END_THINK not in body and _TOOLS_START not in body:
        return _message(reasoning=plain_text(body)), None if cut else problem
    return _message(content=plain_text(body)), problem


def _message(*, content: str = "", reasoning: str = "") -> dict:
    return {
        "role": "assistant",
        "content": content,
        "reasoning_content": reasoning,
        "tool_calls": [],
    }


def plain_text(text: str) -> str:
    for token in _NOT_IN_TEXT:
        text = text.replace(token, "")
    return text
