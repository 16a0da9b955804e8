"""The generation loop: prefill every prompt, then decode all live sequences together.

Why plain code: the loop is a dozen lines (gpt-fast style) and should read like the
algorithm. It knows nothing of plans, caches or devices; it drives any `StepEngine`,
the small protocol the compiled-plan engine implements, and a `Sampler`. Tokens are
handed to `on_token` as they are produced, so a caller can stream text.

One `forward` with all prompts produces each sequence's first token; each later
`forward` feeds every live sequence its last token ([] for finished ones) and yields the
next. A sequence stops after producing a stop id (kept as its last token, reason "eos")
or `max_new_tokens` tokens (reason "length"); no `forward` follows the final token.

With a `drafter` (`runtime/drafting.py`) each decode round instead verifies drafted tokens
and may emit several per sequence; the sequence takes them in order until it stops, and the
drafter undoes what it fed past the tokens taken, so the engine ends where the plain loop
would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from v4c.errors import SamplingError
from v4c.runtime.pays import WARM
from v4c.runtime.penalties import Penalties
from v4c.runtime.sampler import Sampler

if TYPE_CHECKING:  # the loop only calls them; it stays free of engines and plans
    from v4c.runtime.drafting import DraftStats, MtpDrafter


class StepEngine(Protocol):
    def reset(self, batch: int) -> None:
        """Fresh caches for `batch` sequences."""

    def forward(self, tokens: list[list[int]]) -> torch.Tensor:
        """Append tokens to each sequence (lists may differ in length, some may be
        empty); return fp32 logits [B, V] at each sequence's last new token."""


@dataclass
class GenerationResult:
    tokens: list[list[int]]  # new ids per sequence, a stop id included as the last one
    stop_reasons: list[str]  # "eos" | "length" per sequence
    prompt_tokens: list[int]  # prompt length per sequence
    prefill_s: float  # the prefill forward and the first tokens' sampling
    decode_s: float  # every later step
    speculation: DraftStats | None = None  # what the drafter did, when there was one

    @property
    def generated_tokens(self) -> list[int]:
        return [len(t) for t in self.tokens]

    @property
    def decode_tokens(self) -> int:
        """Tokens produced by decode steps: all but each sequence's first (from prefill)."""
        return sum(self.generated_tokens) - len(self.tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0


class _Batch:
    """The sequences being generated: their tokens so far and why each stopped."""

    def __init__(self, size: int, max_new_tokens: int, stop_ids: set[int], on_token):
        self.tokens: list[list[int]] = [[] for _ in range(size)]
        self.reasons: list[str | None] = [None] * size
        self._max = max_new_tokens
        self._stop_ids = stop_ids
        self._on_token = on_token

    def live(self) -> list[int]:
        return [i for i, reason in enumerate(self.reasons) if reason is None]

    def accept(self, seqs: Sequence[int], ids: list[int]) -> None:
        for seq, token in zip(seqs, ids, strict=True):
            self.take(seq, [token])

    def take(self, seq: int, ids: list[int]) -> int:
        """Append ids to `seq` in order until it stops; returns how many it took."""
        for n, token in enumerate(ids, start=1):
            self.tokens[seq].append(token)
            if self._on_token is not None:
                self._on_token(seq, token)
            if token in self._stop_ids:
                self.reasons[seq] = "eos"
            elif len(self.tokens[seq]) >= self._max:
                self.reasons[seq] = "length"
            if self.reasons[seq] is not None:
                return n
        return len(ids)


def generate(
    engine: StepEngine,
    prompts: list[list[int]],
    sampler: Sampler,
    *,
    max_new_tokens: int,
    stop_ids: set[int],
    on_token: Callable[[int, int], None] | None = None,
    reset: bool = True,
    drafter: MtpDrafter | None = None,
    penalties: Penalties | None = None,
) -> GenerationResult:
    """Generate for every prompt; `on_token(seq_index, token_id)` streams each new token.
    `reset=False` continues the engine's sequences: each prompt is appended to what its
    sequence already holds (a chat's next turn). The last new token is not fed back.
    `drafter`: decode speculatively with it (the same tokens greedy, the same distribution
    sampled). `penalties`: applied to each row's logits before sampling (not with a
    drafter, whose verification samples inside)."""
    _check(prompts, max_new_tokens)
    if penalties is not None and not penalties.active:
        penalties = None
    if penalties is not None and drafter is not None:
        raise SamplingError("penalties: not with speculative decoding (its verify step samples)")

    def sample(rows: list[int], logits):
        if penalties is not None:
            logits = penalties.apply(logits, [prompts[i] for i in rows],
                                     [batch.tokens[i] for i in rows])  # fmt: skip
        return sampler.sample(logits).tolist()

    batch = _Batch(len(prompts), max_new_tokens, set(stop_ids), on_token)
    if reset:
        engine.reset(len(prompts))

    start = time.perf_counter()
    everyone = list(range(len(prompts)))
    if drafter is None:
        logits = _forward(engine, [list(p) for p in prompts])
    else:
        logits = drafter.prefill([list(p) for p in prompts], reset)
    batch.accept(everyone, sample(everyone, logits))
    prefill_s = time.perf_counter() - start

    start = time.perf_counter()
    if drafter is not None:
        _speculate(drafter, batch, sampler)
    while live := batch.live():
        step = [[batch.tokens[i][-1]] if i in live else [] for i in everyone]
        logits = _forward(engine, step)
        # only live rows are sampled: a finished row's logits carry no meaning
        batch.accept(live, sample(live, logits[live]))
    decode_s = time.perf_counter() - start

    return GenerationResult(
        tokens=batch.tokens,
        stop_reasons=[str(r) for r in batch.reasons],
        prompt_tokens=[len(p) for p in prompts],
        prefill_s=prefill_s,
        decode_s=decode_s,
        speculation=None if drafter is None else drafter.stats,
    )


def _speculate(drafter: MtpDrafter, batch: _Batch, sampler: Sampler) -> None:
    """The decode rounds with a drafter: verify, take what each sequence keeps, commit. Near
    the caches' end, where K + 1 positions no longer fit, the plain loop finishes; it also
    does once an `auto` drafter's rounds stop paying (`runtime/pays.py`), after the plain
    steps that measure what they must beat."""
    pays = drafter.pays
    for _ in range(WARM if pays is not None else 0):
        if not (live := batch.live()):
            return
        step = [[tokens[-1]] if i in live else [] for i, tokens in enumerate(batch.tokens)]
        start = time.perf_counter()
        logits = drafter.plain(step)
        pays.plain_step(time.perf_counter() - start, len(live))
        batch.accept(live, sampler.sample(logits[live]).tolist())
    if live := batch.live():
        drafter.start(live, [batch.tokens[i][-1] for i in live])
    while (live := batch.live()) and drafter.fits(live):
        start = time.perf_counter()
        emitted = drafter.propose(live, [batch.tokens[i][-1] for i in live])
        taken = [batch.take(i, ids) for i, ids in zip(live, emitted)]
        drafter.commit(taken, [batch.reasons[i] is None for i in live])
        if pays is not None and (why := pays.round(time.perf_counter() - start, sum(taken))):
            drafter.stats.stopped = why
            return


def _check(prompts: list[list[int]], max_new_tokens: int) -> None:
    if not prompts:
        raise ValueError("prompts is empty")
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompts[{i}] is empty: a prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def _forward(engine: StepEngine, tokens: list[list[int]]) -> torch.Tensor:
    logits = engine.forward(tokens)
    if logits.dim() != 2 or logits.shape[0] != len(tokens):
        raise ValueError(
            f"engine.forward returned logits of shape {tuple(logits.shape)} for a batch of "
            f"{len(tokens)}; expected [batch, vocab]"
        )
    return logits
