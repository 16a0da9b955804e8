"""One HTTP request's choices in the scheduler, their outputs as an async stream.

Why a bridge: the scheduler runs on its own thread and calls back there; a handler awaits
on the event loop. Each output is handed over with `call_soon_threadsafe` into an asyncio
queue, so the loop never blocks on the engine. A request's `n` choices are submitted
together (all or none: a full queue refuses the request whole). Whatever way the handler
ends (the client went away, the task was cancelled), `close` cancels the choices still
running, so their cache rows are freed at the scheduler's next step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from v4c.runtime.scheduler import (
    Output,
    PromptTooLong,
    QueueFull,
    Request,
    SamplingParams,
    Scheduler,
)
from v4c.serve.errors import APIError
from v4c.serve.metrics import Metrics


class Generation:
    def __init__(
        self,
        scheduler: Scheduler,
        metrics: Metrics,
        prompts: list[list[int]],
        params: SamplingParams,
        n: int,
        prompt_param: str = "messages",
    ):
        """`n` choices of each prompt; choice i*n + j is prompt i's j-th (its seed + j).
        `prompt_param`: the request field a prompt too long is blamed on."""
        self.metrics, self.scheduler = metrics, scheduler
        self.start = time.perf_counter()
        self._queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.requests: list[Request] = []
        for prompt in prompts:
            for j in range(n):
                seed = None if params.seed is None else params.seed + j
                index = len(self.requests)

                def emit(out: Output, index=index) -> None:
                    if not loop.is_closed():  # else the server is gone, and its client
                        loop.call_soon_threadsafe(self._queue.put_nowait, (index, out))

                self.requests.append(Request(list(prompt), replace(params, seed=seed), emit))
        self.first: list[float | None] = [None] * len(self.requests)
        self.counts = [0] * len(self.requests)
        try:
            scheduler.submit(self.requests)
        except QueueFull as err:
            metrics.request_refused(429)
            raise APIError(429, f"the server is busy: {err}; retry later", code="queue_full",
                           headers={"Retry-After": "1"}) from None  # fmt: skip
        except PromptTooLong as err:
            metrics.request_refused(400)
            code = "context_length_exceeded"
            raise APIError(400, str(err), param=prompt_param, code=code) from None

    async def outputs(self) -> AsyncIterator[tuple[int, Output]]:
        """(choice index, output) as they come, until every choice has finished."""
        left = len(self.requests)
        while left:
            index, out = await self._queue.get()
            now = time.perf_counter() - self.start
            if out.tokens and self.first[index] is None:
                self.first[index] = now
            self.counts[index] += len(out.tokens)
            if out.finish is not None:
                left -= 1
                prompt = len(self.requests[index].prompt)
                self.metrics.request_done(
                    out.finish, prompt, self.counts[index], self.first[index], now
                )
            yield index, out

    def close(self) -> None:
        """Cancel the choices that have not finished (the client is gone)."""
        for request in self.requests:
            if request.finish is None:
                self.scheduler.cancel(request)
