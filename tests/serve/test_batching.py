"""Continuous batching on the tiny model: 32 greedy streams at once each say what the same
request says alone; a client that goes away mid-stream frees its cache row.

The first test needs batch-invariant kernels (DESIGN.md, Codegen): a row's logits must not
depend on how many rows share its step, nor on where its prompt was cut into chunks."""

from __future__ import annotations

import asyncio

PROMPTS = ["The sky is", "Once upon a time", "def main():", "1, 2, 3,"]


def test_concurrent_greedy_streams_equal_each_alone(tiny_server):
    client = tiny_server.client
    alone = [
        client.completions.create(model="tiny", prompt=p, max_tokens=6, temperature=0)
        .choices[0].text
        for p in PROMPTS
    ]  # fmt: skip

    async def stream(client, prompt: str) -> str:
        chunks = await client.completions.create(
            model="tiny", prompt=prompt, max_tokens=6, temperature=0, stream=True
        )
        return "".join([c.choices[0].text async for c in chunks])

    async def together() -> list[str]:
        async with tiny_server.async_client() as client:
            jobs = [stream(client, PROMPTS[i % len(PROMPTS)]) for i in range(32)]
            return await asyncio.gather(*jobs)

    texts = asyncio.run(together())
    assert texts == [alone[i % len(PROMPTS)] for i in range(32)]
    assert tiny_server.idle() and tiny_server.scheduler.running == 0


def test_a_client_that_goes_away_frees_its_row(tiny_server):
    stream = tiny_server.client.completions.create(
        model="tiny", prompt="Count to a hundred:", max_tokens=200, temperature=0, stream=True
    )
    next(iter(stream))  # the first token came: the request holds a row
    assert tiny_server.scheduler.running == 1
    stream.close()  # the connection goes away
    assert tiny_server.idle(timeout=10), "the cancelled request still holds its row"
    assert all(row is None for row in tiny_server.scheduler.rows)
