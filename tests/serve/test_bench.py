"""`v4c.serve.bench` against a scripted server: every request is counted with the tokens
the server reports, and the figures are consistent (percentiles ordered, throughput the
tokens over the wall time). Speed itself is measured by `v4c bench --serve`, never here."""

from __future__ import annotations

import asyncio

from tests.serve.scripted import ScriptedEngine, serving
from v4c.serve.bench import format_result, percentiles, run_load


def test_percentiles_by_nearest_rank():
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    got = percentiles(values)
    assert (got["p50"], got["p90"], got["p99"]) == (50.0, 90.0, 99.0)
    assert abs(got["mean"] - 50.5) < 1e-9  # a sum of 100 floats: rounding far below 1e-9
    assert percentiles([]) == {}


def test_load_counts_every_request_and_token(tok):
    engine = ScriptedEngine(tok.vocab_size, tok.encode(" a" * 20), max_batch=4)
    with serving(engine, tok, name="m") as server:
        done = []
        result = asyncio.run(run_load(server.url, requests=10, concurrency=4, prompt_len=5,
                                      max_tokens=6, on_done=lambda: done.append(1)))  # fmt: skip
    assert result.completed == 10 == len(done) and result.output_tokens == 60
    assert abs(result.output_tokens_per_s * result.duration_s - 60) < 1e-6
    for figures in (result.ttft_ms, result.tpot_ms):
        assert 0 < figures["p50"] <= figures["p90"] <= figures["p99"]
    assert len(format_result(result)) == 4
