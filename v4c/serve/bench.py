"""Load on a running server, measured as a client sees it (`v4c bench --serve`).

Why through the `openai` client: the figures a reader compares with `vllm bench serve` are
the ones a client gets — requests/s, output tokens/s, time to first token (TTFT) and time
per output token after it (TPOT), at p50/p90/p99 — so each request is a streamed
/v1/completions call with a prompt of exactly `prompt_len` token ids, timed from its send
to its first and last chunk, its tokens counted by the usage the server reports. At most
`concurrency` requests are in flight; the clock runs from the first send to the last reply.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class ServeBenchResult:
    url: str
    requests: int
    concurrency: int
    prompt_len: int
    max_tokens: int
    temperature: float
    duration_s: float = 0.0
    completed: int = 0
    output_tokens: int = 0
    requests_per_s: float = 0.0
    output_tokens_per_s: float = 0.0
    ttft_ms: dict[str, float] = field(default_factory=dict)  # p50, p90, p99, mean
    tpot_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Timing:
    ttft: float
    total: float
    tokens: int


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 (nearest rank) and the mean, in milliseconds of `values` in seconds."""
    if not values:
        return {}
    ranked = sorted(values)

    def rank(p: float) -> float:
        return ranked[min(len(ranked) - 1, max(0, round(p / 100 * len(ranked)) - 1))] * 1e3

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99),
            "mean": sum(ranked) / len(ranked) * 1e3}  # fmt: skip


async def _one(client, model: str, prompt: list[int], max_tokens: int, temperature: float):
    start = time.perf_counter()
    first, tokens = None, 0
    stream = await client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, temperature=temperature,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    async for chunk in stream:
        if chunk.choices and first is None:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return _Timing(first or 0.0, time.perf_counter() - start, tokens)


async def run_load(
    url: str,
    *,
    requests: int,
    concurrency: int,
    prompt_len: int,
    max_tokens: int,
    temperature: float = 0.0,
    vocab: int = 100_000,
    api_key: str = "none",
    on_done: Callable[[], None] = lambda: None,
) -> ServeBenchResult:
    import openai

    result = ServeBenchResult(url, requests, concurrency, prompt_len, max_tokens, temperature)
    rng = random.Random(0)
    prompts = [[rng.randrange(vocab) for _ in range(prompt_len)] for _ in range(requests)]
    limit = asyncio.Semaphore(concurrency)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0,
                                timeout=600)  # fmt: skip
    model = (await client.models.list()).data[0].id

    async def bounded(prompt: list[int]) -> _Timing:
        async with limit:
            timing = await _one(client, model, prompt, max_tokens, temperature)
            on_done()
            return timing

    start = time.perf_counter()
    timings = await asyncio.gather(*(bounded(p) for p in prompts))
    result.duration_s = time.perf_counter() - start
    await client.close()
    result.completed = len(timings)
    result.output_tokens = sum(t.tokens for t in timings)
    result.requests_per_s = result.completed / result.duration_s
    result.output_tokens_per_s = result.output_tokens / result.duration_s
    result.ttft_ms = percentiles([t.ttft for t in timings])
    result.tpot_ms = percentiles(
        [(t.total - t.ttft) / (t.tokens - 1) for t in timings if t.tokens > 1]
    )
    return result


def format_result(r: ServeBenchResult) -> list[str]:
    def line(name: str, figures: dict[str, float]) -> str:
        return f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()) + " ms"

    return [
        f"{r.completed} requests, {r.concurrency} at a time, prompts of {r.prompt_len} tokens, "
        f"up to {r.max_tokens} new (temperature {r.temperature:g}) in {r.duration_s:.2f} s",
        f"throughput: {r.requests_per_s:.2f} requests/s, {r.output_tokens_per_s:.1f} output "
        f"tokens/s ({r.output_tokens} tokens)",
        line("TTFT", r.ttft_ms),
        line("TPOT", r.tpot_ms),
    ]
