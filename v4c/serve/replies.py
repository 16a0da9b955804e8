"""Scheduler outputs -> OpenAI's response shapes: a chat choice built as it streams, log-
probabilities, usage.

Why one place: a streamed and a whole response must say the same thing, so both are built
from the same `ChatChoice`, which feeds each output's text through the chat parser
(`ReplyStream`) and keeps what it gave: the deltas a stream sends are exactly the pieces the
whole message is joined from.
"""

from __future__ import annotations

import json
import uuid

from v4c.runtime.chat.format import END_THINK
from v4c.runtime.chat.stream import ReplyStream
from v4c.runtime.scheduler import Output
from v4c.runtime.tokenizer import V4Tokenizer


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class ChatChoice:
    """One choice of a chat completion: `push` an output, get its delta (or None)."""

    def __init__(
        self,
        tokenizer: V4Tokenizer,
        *,
        thinking: bool,
        forced: str,
        logprobs: bool,
        parallel_calls: bool = True,
    ):
        """`parallel_calls` off: a reply keeps only its first tool call."""
        self.tokenizer, self.logprobs, self.parallel_calls = tokenizer, logprobs, parallel_calls
        self.reply = ReplyStream(thinking=thinking)
        self.end_think = tokenizer.token_id(END_THINK)
        self.reasoning_tokens = 0
        self._thinking = thinking
        self.tokens = 0
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[dict] = []
        self.token_logprobs: list[dict] = []
        self.finish: str | None = None
        self._first = self.reply.feed(forced)

    def push(self, out: Output) -> dict:
        """The delta this output adds ({"content": ...}, ...; {} when it adds nothing)."""
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
        self.token_logprobs += [lp_entry(self.tokenizer, *lp) for lp in out.logprobs]
        return delta

    def _delta(self, pieces) -> dict:
        delta: dict = {}
        for kind, value in pieces:
            if kind == "tool_call":
                if self.calls and not self.parallel_calls:
                    continue
                call = {"index": len(self.calls), "id": new_id("call"), **value}
                self.calls.append(call)
                delta.setdefault("tool_calls", []).append(call)
            else:
                key, keep = (
                    ("content", self.content) if kind == "content" else
                    ("reasoning_content", self.reasoning)
                )  # fmt: skip
                keep.append(value)
                delta[key] = delta.get(key, "") + value
        return delta

    def message(self) -> dict:
        calls = [{k: v for k, v in c.items() if k != "index"} for c in self.calls]
        message = {"role": "assistant", "content": "".join(self.content) or None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if calls:
            message["tool_calls"] = calls
        return message

    def choice_logprobs(self) -> dict | None:
        return {"content": self.token_logprobs} if self.logprobs else None


def lp_entry(tokenizer: V4Tokenizer, token: int, logprob: float, top: list) -> dict:
    """A token's log-probability as OpenAI's chat response gives it."""

    def one(tid: int, lp: float) -> dict:
        text = tokenizer.decode([tid])
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    return {**one(token, logprob), "top_logprobs": [one(t, lp) for t, lp in top]}


def completion_logprobs(tokenizer: V4Tokenizer, entries: list, offset: int) -> dict:
    """The legacy completions shape: parallel lists, text offsets from `offset`."""
    tokens, offsets = [], []
    for token, _, _ in entries:
        offsets.append(offset)
        text = tokenizer.decode([token])
        tokens.append(text)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [lp for _, lp, _ in entries],
        "top_logprobs": [{tokenizer.decode([t]): lp for t, lp in top} for _, _, top in entries],
        "text_offset": offsets,
    }


def usage(prompt: int, completion: int, reasoning: int | None = None) -> dict:
    out = {"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion}  # fmt: skip
    if reasoning is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def sse(data: dict | str) -> str:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n"
