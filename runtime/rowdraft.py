"""Speculative decoding inside the serving scheduler: the MTP drafter (`drafting.py`) driven
one cache row at a time, for greedy requests.

Why greedy only: the drafter drafts and accepts with one `Sampler`, while a server's
requests each sample their own way (temperature, top-k/p, seed), and sampled acceptance
must use each request's own distribution. Greedy acceptance needs no sampler state, so all
greedy requests share one verify round and emit exactly the tokens plain greedy decoding
would; sampled requests, and those asking for log-probabilities (a verify round keeps no
per-token logits), decode plainly beside them.

A row drafts from the end of its prefill on (its prompt's last `window` tokens and the main
model's streams there, kept by the prefill); a row that once decodes plainly (near the
caches' end, where K + 1 positions no longer fit) stays plain, since its drafter state no
longer follows it.
"""

from __future__ import annotations

from v4c.runtime.drafting import DraftStats, MtpDrafter
from v4c.runtime.engine import Engine
from v4c.runtime.sampler import Sampler


class RowDrafter:
    def __init__(self, engine: Engine, draft_tokens: int):
        self.drafter = MtpDrafter(engine, Sampler(temperature=0.0), draft_tokens)
        self.drafter.fed = [[] for _ in range(engine.max_batch)]
        self.window = self.drafter.window  # the prefill keeps the streams of this many
        self.drafting: set[int] = set()  # rows whose drafts are ready

    @property
    def stats(self) -> DraftStats:
        return self.drafter.stats

    def admit(self, row: int, prompt: list[int]) -> None:
        """A new request in `row`: the tokens its first draft reads are its prompt's last."""
        self.drafter.fed[row] = list(prompt[-self.window :])
        self.drafting.discard(row)

    def start(self, row: int, first: int) -> None:
        """Draft after `row`'s prefill, whose sampled token is `first`."""
        self.drafter.start([row], [first])
        self.drafting.add(row)

    def ready(self, row: int) -> bool:
        """Whether `row` decodes by a verify round this step (else plainly, from now on)."""
        if row in self.drafting and not self.drafter.fits([row]):
            self.drafting.discard(row)
        return row in self.drafting

    def round(self, rows: list[int], last: list[int]) -> list[list[int]]:
        """Verify each row's drafts after its last token: the tokens each emits."""
        return self.drafter.propose(rows, last)

    def commit(self, rows: list[int], taken: list[int], live: list[bool]) -> None:
        """Row i took the first taken[i] tokens it emitted; rows not `live` have ended."""
        self.drafter.commit(taken, live)
        self.drafting.difference_update(b for b, ok in zip(rows, live) if not ok)
