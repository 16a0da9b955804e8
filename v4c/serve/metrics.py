"""`/metrics`: the server's counters in the Prometheus text format (version 0.0.4).

Why written out: the format is a few lines of text, and the figures are few — requests by
how they ended, requests running and waiting, tokens in and out, and the latencies a user
of a server watches (time to first token, time per output token after it, the whole
request), as histograms with fixed buckets so that any scraper can take quantiles. Names
carry the `v4c:` prefix as vLLM's carry `vllm:`.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter

from v4c.runtime.scheduler import Scheduler

_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = _BUCKETS):
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts):
            total += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{self.name}_bucket{{le="{le}"}} {total}')
        return out + [f"{self.name}_sum {self.sum}", f"{self.name}_count {self.count}"]


class Metrics:
    """Updated by the request handlers (one lock: they run on the event loop and the
    scheduler's thread reads nothing here); `render` reads the scheduler's own counts."""

    def __init__(self):
        self._lock = threading.Lock()
        self.finished: Counter[str] = Counter()  # finish reason -> requests
        self.refused: Counter[int] = Counter()  # status -> requests refused
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft = Histogram("v4c:time_to_first_token_seconds", "Time to the first token.")
        self.tpot = Histogram("v4c:time_per_output_token_seconds", "Time per token after it.")
        self.e2e = Histogram("v4c:e2e_request_latency_seconds", "Whole request latency.")

    def request_done(
        self, reason: str, prompt: int, generated: int, ttft: float | None, total: float
    ) -> None:
        with self._lock:
            self.finished[reason] += 1
            self.prompt_tokens += prompt
            self.generation_tokens += generated
            if ttft is not None:
                self.ttft.observe(ttft)
                if generated > 1:
                    self.tpot.observe((total - ttft) / (generated - 1))
            self.e2e.observe(total)

    def request_refused(self, status: int) -> None:
        with self._lock:
            self.refused[status] += 1

    def render(self, scheduler: Scheduler) -> str:
        running, waiting, rows = scheduler.running, len(scheduler.waiting), len(scheduler.rows)
        with self._lock:
            out = [
                "# HELP v4c:scheduler_steps_total Engine steps the scheduler ran.",
                "# TYPE v4c:scheduler_steps_total counter",
                f"v4c:scheduler_steps_total {scheduler.steps}",
                "# HELP v4c:num_requests_running Requests in the running batch.",
                "# TYPE v4c:num_requests_running gauge",
                f"v4c:num_requests_running {running}",
                "# HELP v4c:num_requests_waiting Requests queued for a cache row.",
                "# TYPE v4c:num_requests_waiting gauge",
                f"v4c:num_requests_waiting {waiting}",
                "# HELP v4c:cache_rows Cache rows (the most requests running at once).",
                "# TYPE v4c:cache_rows gauge",
                f"v4c:cache_rows {rows}",
                "# HELP v4c:request_success_total Requests (choices) ended, by finish reason.",
                "# TYPE v4c:request_success_total counter",
                *(
                    f'v4c:request_success_total{{finished_reason="{r}"}} {n}'
                    for r, n in sorted(self.finished.items())
                ),  # fmt: skip
                "# HELP v4c:request_refused_total Requests refused, by HTTP status.",
                "# TYPE v4c:request_refused_total counter",
                *(
                    f'v4c:request_refused_total{{status="{s}"}} {n}'
                    for s, n in sorted(self.refused.items())
                ),  # fmt: skip
                "# HELP v4c:prompt_tokens_total Prompt tokens prefilled.",
                "# TYPE v4c:prompt_tokens_total counter",
                f"v4c:prompt_tokens_total {self.prompt_tokens}",
                "# HELP v4c:generation_tokens_total Tokens generated.",
                "# TYPE v4c:generation_tokens_total counter",
                f"v4c:generation_tokens_total {self.generation_tokens}",
                *_speculation(scheduler),
                *self.ttft.lines(),
                *self.tpot.lines(),
                *self.e2e.lines(),
            ]
        return "\n".join(out) + "\n"


def _speculation(scheduler: Scheduler) -> list[str]:
    """The drafter's counts, when the server decodes speculatively: drafts verified, drafts
    kept, tokens the verify rounds emitted, and the rounds."""
    if scheduler.drafter is None:
        return []
    stats = scheduler.drafter.stats
    out = []
    for name, value, what in [
        ("draft_tokens", stats.drafted, "Draft tokens verified."),
        ("accepted_tokens", stats.accepted, "Draft tokens the main model kept."),
        ("emitted_tokens", stats.emitted, "Tokens the verify rounds emitted."),
        ("rounds", stats.rounds, "Verify rounds (main-model steps of drafting requests)."),
    ]:
        metric = f"v4c:spec_decode_num_{name}_total"
        out += [f"# HELP {metric} {what}", f"# TYPE {metric} counter", f"{metric} {value}"]
    return out
