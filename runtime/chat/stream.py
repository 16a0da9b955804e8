"""A reply parsed while it is generated: reasoning, content and tool-call deltas.

Why: a streaming client must see the reasoning as `reasoning_content` and the answer as
`content` as they come, and each tool call once whole, never a marker (`</think>`, the
DSML block) in the text. The reply moves through three parts, as `parse_completion`
reads it whole: reasoning (thinking mode) up to `</think>`, content up to the DSML block,
then the block. Text that could still grow into the next marker is held back until it
cannot. A tool call is sent when its `</｜DSML｜invoke>` arrives, parsed by `dsml`; a block
that does not parse is sent as content at the end, its special tokens removed, as
`parse_reply` keeps a malformed reply.
"""

from __future__ import annotations

from v4c.runtime.chat.dsml import parse_tool_calls
from v4c.runtime.chat.format import DSML, END_THINK, TOOL_CALLS_OPEN, ChatError
from v4c.runtime.chat.parse import plain_text
from v4c.runtime.textstream import partial_tail

_TOOLS_START = TOOL_CALLS_OPEN[: -len(">\n")]  # "\n\n<｜DSML｜tool_calls"
_INVOKE_END = f"</{DSML}invoke>"
_BLOCK_END = f"\n</{DSML}tool_calls>"


class ReplyStream:
    """`feed(text)` -> deltas [(kind, value)]: ("reasoning", str), ("content", str) or
    ("tool_call", {"type": "function", "function": {name, arguments}}); `finish()` -> the
    last deltas."""

    def __init__(self, *, thinking: bool):
        self.part = "reasoning" if thinking else "content"
        self._held = ""  # text of the current part not sent yet
        self._calls = 0  # tool calls sent
        self.problem: str | None = None  # why the tool block did not parse, if it did not

    def feed(self, text: str) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        self._held += text
        while True:
            if self.part == "tools":
                return out + self._tool_calls()
            marker = END_THINK if self.part == "reasoning" else _TOOLS_START
            at = self._held.find(marker)
            if at == -1:
                cut = partial_tail(self._held, (marker,))
                out += self._send(self._held[:cut])
                self._held = self._held[cut:]
                return out
            out += self._send(self._held[:at])
            if self.part == "reasoning":
                self.part, self._held = "content", self._held[at + len(marker) :]
            else:
                self.part, self._held = "tools", self._held[at + len(marker) :]

    def finish(self) -> list[tuple[str, object]]:
        """What is still held back: the rest of a part, or a tool block that did not end."""
        out = []
        if self.part == "tools":
            calls, problem = _parse(self._held + ("" if _BLOCK_END in self._held else _BLOCK_END))
            if problem is None and calls:
                out += [("tool_call", call) for call in calls[self._calls :]]
            elif self._calls == 0:
                self.problem = problem or "an empty tool-call block"
                out += self._send(plain_text(_TOOLS_START + self._held), "content")
        else:
            out += self._send(self._held)
        self._held = ""
        return out

    def _tool_calls(self) -> list[tuple[str, object]]:
        end = self._held.rfind(_INVOKE_END)
        if end == -1:
            return []
        calls, problem = _parse(self._held[: end + len(_INVOKE_END)] + _BLOCK_END)
        if problem is not None:
            return []
        new, self._calls = calls[self._calls :], len(calls)
        return [("tool_call", call) for call in new]

    def _send(self, text: str, kind: str | None = None) -> list[tuple[str, object]]:
        text = plain_text(text)
        return [(kind or self.part, text)] if text else []


def _parse(block: str) -> tuple[list[dict], str | None]:
    try:
        return parse_tool_calls(block, 0)[0], None
    except ChatError as err:
        return [], str(err)
