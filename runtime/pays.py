"""`--speculative auto`: speculate while it pays, measured on the run itself.

A round (the main model's verify step over K + 1 tokens, then the MTP block's K draft steps)
costs more than a plain decode step and emits 1 + (kept drafts) tokens per sequence; it pays
when the tokens it emits per second beat a plain step's. Both rates are measured here: the
decode opens with WARM plain steps, the last one timed (the first step of a shape also binds
it), then every round after the first is timed (the first binds the verify and draft
steps). After PROBE timed rounds speculation stops as soon as its rate over the timed rounds
falls below the plain rate, and does not restart. The decision never changes the output:
speculative and plain decoding give the same tokens greedy and the same distribution
sampled (runtime/speculative.py).
"""

from __future__ import annotations

from dataclasses import dataclass

WARM = 2  # plain steps before the first round; the last one is timed
PROBE = 2  # timed rounds before the first decision


@dataclass
class Pays:
    plain: float = 0.0  # tokens per second of the timed plain step
    rounds: int = 0  # rounds recorded (the first is not timed)
    seconds: float = 0.0  # of the timed rounds
    tokens: int = 0  # emitted by the timed rounds

    def plain_step(self, seconds: float, rows: int) -> None:
        """A plain step that advanced `rows` sequences by one token each."""
        self.plain = rows / seconds

    def round(self, seconds: float, tokens: int) -> str:
        """Record a round that emitted `tokens`; returns why to stop ("" to go on)."""
        self.rounds += 1
        if self.rounds == 1:
            return ""
        self.seconds, self.tokens = self.seconds + seconds, self.tokens + tokens
        rate = self.tokens / self.seconds
        if self.rounds - 1 < PROBE or rate >= self.plain:
            return ""
        return (
            f"off after {self.rounds} rounds: {rate:.1f} tokens/s speculating, "
            f"{self.plain:.1f} plain"
        )
