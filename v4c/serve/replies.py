"""Scheduler outputs -> OpenAI's response pieces: a chat reply built as it streams, log-
probabilities, server-sent events.

Why one place: a streamed and a whole response must say the same thing, so both are built
from the same `ChatReply`, which feeds each output's text through the chat parser
(`ReplyStream`) and keeps what it gave: the deltas a stream sends are exactly the pieces the
whole message is joined from.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from v4c.runtime.chat.format import END_THINK
from v4c.runtime.chat.stream import ReplyStream
from v4c.runtime.scheduler import Output
from v4c.runtime.tokenizer import V4Tokenizer
from v4c.serve.responses import (
    ChatLogprobs,
    ChatMessage,
    CompletionLogprobs,
    Delta,
    FunctionCall,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class ChatReply:
    """One choice of a chat completion: `push` an output, get its delta (None: nothing)."""

    def __init__(
        self,
        tokenizer: V4Tokenizer,
        *,
        thinking: bool,
        forced: str,
        logprobs: bool,
        parallel_calls: bool = True,
    ):
        """`forced`: the text the reply starts with (a forced tool call's opening);
        `parallel_calls` off: the reply keeps only its first tool call."""
        self.tokenizer, self.logprobs, self.parallel_calls = tokenizer, logprobs, parallel_calls
        self.reply = ReplyStream(thinking=thinking)
        self.end_think = tokenizer.token_id(END_THINK)
        self.reasoning_tokens = 0
        self._thinking = thinking
        self.tokens = 0
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[ToolCallDelta] = []
        self.token_logprobs: list[TokenLogprob] = []
        self.finish: str | None = None
        self._first = self.reply.feed(forced)

    def push(self, out: Output) -> Delta | None:
        for token in out.tokens:
            self.tokens += 1
            if self._thinking:
                self._thinking = token != self.end_think
                self.reasoning_tokens += self._thinking
        pieces = self._first + self.reply.feed(out.text)
        self._first = []
        if out.finish is not None:
            pieces += self.reply.finish()
        delta = self._delta(pieces)
        if out.finish is not None:
            self.finish = "tool_calls" if self.calls and out.finish == "stop" else out.finish
        self.token_logprobs += [token_logprob(self.tokenizer, *lp) for lp in out.logprobs]
        return delta

    def _delta(self, pieces) -> Delta | None:
        fields: dict = {}
        for kind, value in pieces:
            if kind == "tool_call":
                if self.calls and not self.parallel_calls:
                    continue
                call = ToolCallDelta(index=len(self.calls), id=new_id("call"),
                                     function=FunctionCall(**value["function"]))  # fmt: skip
                self.calls.append(call)
                fields.setdefault("tool_calls", []).append(call)
            else:
                key, keep = (
                    ("content", self.content) if kind == "content" else
                    ("reasoning_content", self.reasoning)
                )  # fmt: skip
                keep.append(value)
                fields[key] = fields.get(key, "") + value
        return Delta(**fields) if fields else None

    def message(self) -> ChatMessage:
        calls = [ToolCall(id=c.id, function=c.function) for c in self.calls]
        return ChatMessage(
            content="".join(self.content) or None,
            reasoning_content="".join(self.reasoning) or None,
            tool_calls=calls or None,
        )

    def choice_logprobs(self, last: int | None = None) -> ChatLogprobs | None:
        """The log-probabilities of every token so far, or of the `last` ones."""
        if not self.logprobs:
            return None
        entries = self.token_logprobs if last is None else self.token_logprobs[-last:]
        return ChatLogprobs(content=entries)


def token_logprob(tokenizer: V4Tokenizer, token: int, logprob: float, top: list) -> TokenLogprob:
    """A token's log-probability as OpenAI's chat response gives it."""

    def one(tid: int, lp: float) -> dict:
        text = tokenizer.decode([tid])
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    return TokenLogprob(**one(token, logprob), top_logprobs=[TopLogprob(**one(t, lp))
                                                             for t, lp in top])  # fmt: skip


def completion_logprobs(tokenizer: V4Tokenizer, entries: list, offset: int) -> CompletionLogprobs:
    """The legacy completions shape: parallel lists, text offsets from `offset`."""
    tokens, offsets = [], []
    for token, _, _ in entries:
        offsets.append(offset)
        text = tokenizer.decode([token])
        tokens.append(text)
        offset += len(text)
    return CompletionLogprobs(
        tokens=tokens,
        token_logprobs=[lp for _, lp, _ in entries],
        top_logprobs=[{tokenizer.decode([t]): lp for t, lp in top} for _, _, top in entries],
        text_offset=offsets,
    )


def sse(data: BaseModel | str) -> str:
    """One server-sent event."""
    text = data if isinstance(data, str) else data.model_dump_json()
    return f"data: {text}\n\n"
