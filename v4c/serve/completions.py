"""The two generating routes: /v1/chat/completions and /v1/completions, whole or streamed.

Why they read as they do: each handler turns its body into prompts and `SamplingParams`,
submits them as one `Generation`, and either collects every choice's outputs into one
response or sends each as a server-sent event in OpenAI's chunk format (the role first,
then deltas of content, reasoning and tool calls, a chunk with the finish reason, the usage
when `stream_options.include_usage` asks, then `[DONE]`). Whatever ends the handler — the
last choice finished, the client went away, the server stopping — the generation is closed,
which cancels what still runs and frees its cache rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from v4c.runtime.penalties import Penalties
from v4c.runtime.scheduler import SamplingParams
from v4c.serve.chat import chat_prompt
from v4c.serve.errors import APIError
from v4c.serve.generation import Generation
from v4c.serve.protocol import ChatRequest, CompletionRequest
from v4c.serve.replies import ChatReply, completion_logprobs, new_id, sse
from v4c.serve.responses import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    Completion,
    CompletionChoice,
    Delta,
    Usage,
)
from v4c.serve.state import ServeState


def sampling(body, state: ServeState, prompt_len: int, logprobs, skip_special: bool):
    """The request's sampling settings; no max_tokens: as many as the caches leave."""
    room = state.max_seq - prompt_len + 1
    return SamplingParams(
        max_new_tokens=max(1, min(body.limit or room, room)),
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=max(body.top_k, 0),
        seed=body.seed,
        stop=body.stops,
        stop_ids=frozenset({state.tokenizer.eos_id}),
        logprobs=logprobs,
        skip_special_tokens=skip_special,
        penalties=Penalties(body.repetition_penalty, body.frequency_penalty, body.presence_penalty),
    )


async def chat_completions(body: ChatRequest, request: Request, state: ServeState):
    state.check_model(body.model)
    prompt = chat_prompt(body)
    ids = state.tokenizer.encode(prompt.text)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = sampling(body, state, len(ids), logprobs, skip_special=False)
    gen = Generation(state.scheduler, state.metrics, [ids], params, body.n)
    replies = [
        ChatReply(
            state.tokenizer,
            thinking=prompt.thinking,
            forced=prompt.forced,
            logprobs=body.logprobs,
            parallel_calls=body.parallel_tool_calls,
        )
        for _ in range(body.n)
    ]
    head = {"id": new_id("chatcmpl"), "created": int(time.time()), "model": state.model}
    if body.stream:
        include = body.stream_options is not None and body.stream_options.include_usage
        events = _chat_events(gen, replies, head, len(ids), include)
        return StreamingResponse(_closing(events, gen), media_type="text/event-stream")
    async with _watch(gen, request):
        async for index, out in gen.outputs():
            replies[index].push(out)
    choices = [
        ChatChoice(
            index=i, message=r.message(), logprobs=r.choice_logprobs(), finish_reason=r.finish
        )  # fmt: skip
        for i, r in enumerate(replies)
    ]
    return _json(ChatCompletion(**head, choices=choices, usage=_chat_usage(len(ids), replies)))


def _chat_usage(prompt: int, replies: list[ChatReply]) -> Usage:
    reasoning = sum(r.reasoning_tokens for r in replies)
    return Usage.of(prompt, sum(r.tokens for r in replies), reasoning)


async def _chat_events(gen, replies, head, prompt_len, include_usage) -> AsyncIterator[str]:
    def chunk(index: int, delta: Delta, finish=None, logprobs=None) -> str:
        choice = ChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)
        return sse(ChatCompletionChunk(**head, choices=[choice]))

    for i in range(len(replies)):
        yield chunk(i, Delta(role="assistant", content=""))
    async for index, out in gen.outputs():
        reply = replies[index]
        delta = reply.push(out)
        logprobs = reply.choice_logprobs(last=len(out.logprobs)) if out.logprobs else None
        if delta is not None or logprobs is not None:
            yield chunk(index, delta or Delta(), logprobs=logprobs)
        if out.finish is not None:
            yield chunk(index, Delta(), reply.finish)
    if include_usage:
        yield sse(ChatCompletionChunk(**head, choices=[], usage=_chat_usage(prompt_len, replies)))
    yield sse("[DONE]")


async def completions(body: CompletionRequest, request: Request, state: ServeState):
    state.check_model(body.model)
    prompts = _completion_prompts(body, state)
    longest = max(len(p) for p in prompts)
    params = sampling(body, state, longest, body.logprobs, skip_special=True)
    gen = Generation(state.scheduler, state.metrics, prompts, params, body.n, "prompt")
    head = {"id": new_id("cmpl"), "created": int(time.time()), "model": state.model}
    usage = Usage.of(sum(len(p) for p in prompts), 0)  # the completion tokens when known
    if body.stream:
        include = body.stream_options is not None and body.stream_options.include_usage
        events = _completion_events(gen, head, state, usage if include else None, body.logprobs)
        return StreamingResponse(_closing(events, gen), media_type="text/event-stream")
    count = len(gen.requests)
    texts, finish, entries = [""] * count, [None] * count, [[] for _ in range(count)]
    async with _watch(gen, request):
        async for index, out in gen.outputs():
            texts[index] += out.text
            entries[index] += out.logprobs
            finish[index] = out.finish or finish[index]
    tok = state.tokenizer
    choices = [
        CompletionChoice(index=i, text=texts[i], finish_reason=finish[i], logprobs=None
                         if body.logprobs is None else completion_logprobs(tok, entries[i], 0))
        for i in range(count)
    ]  # fmt: skip
    usage = Usage.of(usage.prompt_tokens, sum(gen.counts))
    return _json(Completion(**head, choices=choices, usage=usage))


async def _completion_events(gen, head, state, usage, logprobs) -> AsyncIterator[str]:
    """`usage`: the prompt tokens, to send with the completion tokens at the end (None:
    not asked for)."""
    offsets = [0] * len(gen.requests)
    async for index, out in gen.outputs():
        lp = None
        if logprobs is not None:
            lp = completion_logprobs(state.tokenizer, out.logprobs, offsets[index])
        offsets[index] += len(out.text)
        choice = CompletionChoice(index=index, text=out.text, logprobs=lp,
                                  finish_reason=out.finish)  # fmt: skip
        yield sse(Completion(**head, choices=[choice]))
    if usage is not None:
        usage = Usage.of(usage.prompt_tokens, sum(gen.counts))
        yield sse(Completion(**head, choices=[], usage=usage))
    yield sse("[DONE]")


def _json(body: BaseModel) -> Response:
    return Response(body.model_dump_json(), media_type="application/json")


def _completion_prompts(body: CompletionRequest, state: ServeState) -> list[list[int]]:
    """Each prompt's ids: a text after BOS (as `v4c run --raw`), or ids as given."""
    prompt, tok = body.prompt, state.tokenizer
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and isinstance(prompt[0], int):
        prompt = [prompt]
    out = [[tok.bos_id, *tok.encode(p)] if isinstance(p, str) else list(p) for p in prompt]
    vocab = tok.vocab_size
    for i, ids in enumerate(out):
        if not ids or any(not 0 <= t < vocab for t in ids):
            raise APIError(400, f"prompt[{i}]: token ids must lie in 0..{vocab - 1} and be "
                           "at least one", param="prompt")  # fmt: skip
    return out


async def _closing(events: AsyncIterator[str], gen: Generation) -> AsyncIterator[str]:
    """The stream, then `close` however it ends (a disconnect cancels the iteration)."""
    try:
        async for event in events:
            yield event
    finally:
        gen.close()


class _watch:
    """While a whole response is collected, cancel it if the client goes away."""

    def __init__(self, gen: Generation, request: Request):
        self.gen, self.request = gen, request

    async def __aenter__(self):
        self.task = asyncio.create_task(self._poll())

    async def __aexit__(self, *exc):
        self.task.cancel()
        self.gen.close()

    async def _poll(self) -> None:
        while not await self.request.is_disconnected():
            await asyncio.sleep(0.25)
        self.gen.close()
