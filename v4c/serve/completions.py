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
from fastapi.responses import JSONResponse, StreamingResponse

from v4c.runtime.scheduler import SamplingParams
from v4c.serve.chat import chat_prompt
from v4c.serve.errors import APIError
from v4c.serve.generation import Generation
from v4c.serve.protocol import ChatRequest, CompletionRequest
from v4c.serve.replies import ChatChoice, completion_logprobs, new_id, sse, usage
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
    )


async def chat_completions(body: ChatRequest, request: Request, state: ServeState):
    state.check_model(body.model)
    prompt = chat_prompt(body)
    ids = state.tokenizer.encode(prompt.text)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = sampling(body, state, len(ids), logprobs, skip_special=False)
    gen = Generation(state.scheduler, state.metrics, [ids], params, body.n)
    choices = [
        ChatChoice(
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
        events = _chat_events(gen, choices, head, len(ids), include)
        return StreamingResponse(_closing(events, gen), media_type="text/event-stream")
    async with _watch(gen, request):
        async for index, out in gen.outputs():
            choices[index].push(out)
    return JSONResponse({
        **head, "object": "chat.completion",
        "choices": [
            {"index": i, "message": c.message(), "logprobs": c.choice_logprobs(),
             "finish_reason": c.finish}
            for i, c in enumerate(choices)
        ],
        "usage": _chat_usage(len(ids), choices),
    })  # fmt: skip


def _chat_usage(prompt: int, choices: list[ChatChoice]) -> dict:
    reasoning = sum(c.reasoning_tokens for c in choices)
    return usage(prompt, sum(c.tokens for c in choices), reasoning)


async def _chat_events(gen, choices, head, prompt_len, include_usage) -> AsyncIterator[str]:
    head = {**head, "object": "chat.completion.chunk"}

    def chunk(index: int, delta: dict, finish=None, logprobs=None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**head, "choices": [choice]})

    for i in range(len(choices)):
        yield chunk(i, {"role": "assistant", "content": ""})
    async for index, out in gen.outputs():
        choice = choices[index]
        delta = choice.push(out)
        new = choice.token_logprobs[len(choice.token_logprobs) - len(out.logprobs) :]
        logprobs = {"content": new} if out.logprobs else None
        if delta or logprobs:
            yield chunk(index, delta, logprobs=logprobs)
        if out.finish is not None:
            yield chunk(index, {}, choice.finish)
    if include_usage:
        yield sse({**head, "choices": [], "usage": _chat_usage(prompt_len, choices)})
    yield sse("[DONE]")


async def completions(body: CompletionRequest, request: Request, state: ServeState):
    state.check_model(body.model)
    prompts = _completion_prompts(body, state)
    longest = max(len(p) for p in prompts)
    params = sampling(body, state, longest, body.logprobs, skip_special=True)
    gen = Generation(state.scheduler, state.metrics, prompts, params, body.n)
    head = {"id": new_id("cmpl"), "created": int(time.time()), "model": state.model,
            "object": "text_completion"}  # fmt: skip
    count = len(gen.requests)
    if body.stream:
        include = body.stream_options is not None and body.stream_options.include_usage
        events = _completion_events(gen, head, state, include, body.logprobs is not None)
        return StreamingResponse(_closing(events, gen), media_type="text/event-stream")
    texts, finish, entries = [""] * count, [None] * count, [[] for _ in range(count)]
    async with _watch(gen, request):
        async for index, out in gen.outputs():
            texts[index] += out.text
            entries[index] += out.logprobs
            finish[index] = out.finish or finish[index]
    tok = state.tokenizer
    choices = [
        {"index": i, "text": texts[i], "finish_reason": finish[i],
         "logprobs": completion_logprobs(tok, entries[i], 0) if body.logprobs is not None
         else None}
        for i in range(count)
    ]  # fmt: skip
    prompt_total = sum(len(r.prompt) for r in gen.requests[:: body.n])
    return JSONResponse({**head, "choices": choices, "usage": usage(prompt_total, sum(gen.counts))})


async def _completion_events(gen, head, state, include_usage, logprobs) -> AsyncIterator[str]:
    offsets = [0] * len(gen.requests)
    async for index, out in gen.outputs():
        lp = None
        if logprobs:
            lp = completion_logprobs(state.tokenizer, out.logprobs, offsets[index])
        offsets[index] += len(out.text)
        choice = {"index": index, "text": out.text, "logprobs": lp, "finish_reason": out.finish}
        yield sse({**head, "choices": [choice]})
    if include_usage:
        prompt = sum(len(r.prompt) for r in gen.requests)
        yield sse({**head, "choices": [], "usage": usage(prompt, sum(gen.counts))})
    yield sse("[DONE]")


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
