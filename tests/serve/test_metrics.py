"""/metrics in the Prometheus text format: histograms cumulative with +Inf equal to the
count, TPOT taken over the tokens after the first, and the drafter's counts when the
server decodes speculatively."""

from __future__ import annotations

from types import SimpleNamespace

from v4c.runtime.drafting import DraftStats
from v4c.serve.metrics import Metrics


def _values(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                     if not line.startswith("#"))}  # fmt: skip


def test_counts_histograms_and_speculation():
    metrics = Metrics()
    metrics.request_done("stop", prompt=10, generated=5, ttft=0.03, total=0.43)  # TPOT 0.1
    metrics.request_done("length", prompt=7, generated=1, ttft=0.3, total=0.3)  # no TPOT
    metrics.request_refused(429)
    drafter = SimpleNamespace(stats=DraftStats(rounds=4, drafted=8, accepted=3, emitted=7))
    scheduler = SimpleNamespace(running=2, waiting=[1], rows=[None] * 4, steps=9, drafter=drafter)
    got = _values(metrics.render(scheduler))
    assert got["v4c:num_requests_running"] == 2 and got["v4c:num_requests_waiting"] == 1
    assert got['v4c:request_success_total{finished_reason="stop"}'] == 1
    assert got['v4c:request_refused_total{status="429"}'] == 1
    assert got["v4c:prompt_tokens_total"] == 17 and got["v4c:generation_tokens_total"] == 6
    assert got['v4c:time_to_first_token_seconds_bucket{le="0.05"}'] == 1
    assert got['v4c:time_to_first_token_seconds_bucket{le="+Inf"}'] == 2
    assert got["v4c:time_per_output_token_seconds_count"] == 1
    assert abs(got["v4c:time_per_output_token_seconds_sum"] - 0.1) < 1e-12
    assert got["v4c:spec_decode_num_accepted_tokens_total"] == 3
    assert got["v4c:spec_decode_num_draft_tokens_total"] == 8
    scheduler.drafter = None
    assert "spec_decode" not in metrics.render(scheduler)
