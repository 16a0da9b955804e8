"""A soak: a few hundred small requests, 32 at a time, mixed whole and streamed, some
dropped by their client halfway, against a scripted engine with 8 rows (so most requests
wait for a row). None may be lost (every kept one answers with its tokens), and afterwards
no row is held, no request waits and no request object is alive."""

from __future__ import annotations

import asyncio
import gc
import time

from tests.serve.scripted import ScriptedEngine, serving
from v4c.runtime.scheduler import Request

COUNT = 200


def test_soak_loses_nothing_and_leaks_nothing(tok):
    script = [*tok.encode(" a b c d e f g h"), tok.eos_id]
    engine = ScriptedEngine(tok.vocab_size, script, max_batch=8)
    done: list[tuple[str, int]] = []

    async def one(client, i: int) -> None:
        prompt = f"request {i}"
        if i % 3:
            temperature = 0.5 if i % 10 == 1 else 0.0  # a few sampled (CPU sampling is slow)
            reply = await client.completions.create(
                model="m", prompt=prompt, max_tokens=1 + i % 4, temperature=temperature, seed=i
            )
            done.append((reply.choices[0].finish_reason, reply.usage.completion_tokens))
            return
        stream = await client.completions.create(
            model="m", prompt=prompt, max_tokens=4, temperature=0, stream=True
        )
        async for _ in stream:
            if i % 2:  # dropped after its first token
                await stream.close()
                return
        done.append(("streamed", 4))

    with serving(engine, tok, name="m") as server:

        async def soak() -> None:
            async with server.async_client() as client:
                limit = asyncio.Semaphore(32)

                async def bounded(i: int) -> None:
                    async with limit:
                        await one(client, i)

                await asyncio.wait_for(asyncio.gather(*(bounded(i) for i in range(COUNT))), 60)

        start = time.monotonic()
        asyncio.run(soak())
        assert time.monotonic() - start < 60
        kept = [i for i in range(COUNT) if i % 3 or not i % 2]
        assert len(done) == len(kept)
        assert sorted(t for r, t in done if r != "streamed") == sorted(
            1 + i % 4 for i in range(COUNT) if i % 3
        )
        assert server.idle(timeout=10)
        scheduler = server.scheduler
        assert not scheduler.waiting and all(row is None for row in scheduler.rows)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is Request], "requests leaked"
