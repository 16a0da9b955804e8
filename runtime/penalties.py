"""Repetition, frequency and presence penalties on next-token logits, and stop strings: the
controls users of other engines expect, shared by `v4c run`, `v4c chat` and the server.

Definitions (as the engines users come from define them):
- repetition (transformers, llama.cpp; 1: off): the logit of every token already in the
  sequence (prompt and reply) is divided by the penalty where positive, multiplied where
  negative, so a penalty above 1 makes it less likely either way;
- frequency and presence (OpenAI; 0: off): from the logit of a token the reply has produced
  c > 0 times, subtract `frequency * c + presence`.
Applied to the logits before temperature and the filters, so greedy decoding is penalised
too. Rows are independent: each row's history is its own.

A stop string ends the reply where it first appears in the text; the text up to it is the
reply (the string itself is not part of it). `StopText` finds it in streamed text, holding
back only what could be the start of a stop string.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from v4c.errors import SamplingError


@dataclass(frozen=True)
class Penalties:
    repetition: float = 1.0
    frequency: float = 0.0
    presence: float = 0.0

    def __post_init__(self):
        if not self.repetition > 0:
            raise SamplingError(f"repetition penalty must be > 0, got {self.repetition}")
        for name in ("frequency", "presence"):
            value = getattr(self, name)
            if not -2.0 <= value <= 2.0:
                raise SamplingError(f"{name} penalty must be in [-2, 2], got {value}")

    @property
    def active(self) -> bool:
        return (self.repetition, self.frequency, self.presence) != (1.0, 0.0, 0.0)

    def apply(self, logits: torch.Tensor, prompts: list[list[int]], replies: list[list[int]]
              ) -> torch.Tensor:  # fmt: skip
        """logits [B, V] of the rows whose prompts and replies so far are given -> a
        penalised copy (fp32)."""
        out = logits.float().clone()
        for row, (prompt, reply) in enumerate(zip(prompts, replies, strict=True)):
            if self.repetition != 1.0:
                seen = torch.tensor(sorted({*prompt, *reply}), dtype=torch.long, device=out.device)
                x = out[row, seen]
                out[row, seen] = torch.where(x > 0, x / self.repetition, x * self.repetition)
            if reply and (self.frequency or self.presence):
                counts = Counter(reply)
                ids = torch.tensor(list(counts), dtype=torch.long, device=out.device)
                c = torch.tensor(list(counts.values()), dtype=out.dtype, device=out.device)
                out[row, ids] -= self.frequency * c + self.presence
        return out


class StopText:
    """Streamed text cut at the first stop string: `push(chunk)` gives the text that can
    be shown now, `stopped` says a stop string was found (the text before it was given),
    `flush()` the rest at the end."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.text = ""  # everything pushed
        self.shown = 0  # how much of it was given out
        self.stopped = False

    def push(self, chunk: str) -> str:
        if self.stopped:
            return ""
        self.text += chunk
        at = min((i for s in self.stops if (i := self.text.find(s)) >= 0), default=-1)
        if at >= 0:
            self.stopped = True
            return self._give(at)
        hold = max((len(s) - 1 for s in self.stops), default=0)
        return self._give(max(self.shown, len(self.text) - hold))

    def flush(self) -> str:
        return "" if self.stopped else self._give(len(self.text))

    def _give(self, end: int) -> str:
        out, self.shown = self.text[self.shown : end], max(self.shown, end)
        return out


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """(the text before the first stop string, whether there was one)."""
    at = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)
