"""The serving scheduler: one loop that owns the engine and runs many requests at once.

Why one loop: the engine's cache rows and step buffers are one set, so exactly one thread
may step it. Requests arrive from any thread (`submit`, `cancel`); the loop (`start`, or
`step` called by hand) does the rest, continuous batching in the manner of vLLM and
nano-vllm:

- a waiting request takes a free cache row (emptied with `clear_row`) and joins the running
  set at the next step, first in first served; at most `max_waiting` requests wait, more
  are refused (`QueueFull`), and a prompt the caches cannot hold is refused at once;
- each step feeds every running request: a decoding one its last token, a prefilling one
  its next chunk of at most `prefill_chunk` prompt tokens, chunks adding up to at most
  `prefill_chunk` a step, so a long prompt never stalls the decodes beside it for more
  than one chunk. Chunks are cut the same way whatever else runs, so a request's steps do
  not depend on its neighbours. The engine runs the decode rows as one step of their
  batch size and each prefill chunk length as one step;
- a request that finishes (a stop id, a stop string, its token budget, the caches' end)
  or is cancelled leaves at once and its row is free for the next step.

With a `RowDrafter`, greedy requests decode speculatively instead: one verify round of
the main model over each one's drafts, of which it takes tokens until it stops.

Each request's results go to its `emit` callback, called on the loop's thread with one
`Output` a step (a token, its text, its log-probabilities, and the finish reason on the
last). Sampling is per request: greedy rows take one argmax together, sampled rows draw
with their own seeded `Sampler`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

from v4c.errors import V4CError
from v4c.runtime.penalties import Penalties
from v4c.runtime.sampler import Sampler
from v4c.runtime.textstream import TextStream
from v4c.runtime.tokenizer import V4Tokenizer

if TYPE_CHECKING:  # the scheduler only calls it
    from v4c.runtime.rowdraft import RowDrafter

_log = logging.getLogger("v4c.serve")


class RowEngine(Protocol):
    """What the scheduler needs of an engine (`runtime.engine.Engine` is one)."""

    max_batch: int
    max_seq: int

    def reset(self, batch: int) -> None: ...
    def clear_row(self, row: int) -> None: ...
    def forward(self, tokens: list[list[int]]) -> torch.Tensor: ...


class QueueFull(V4CError):
    """As many requests wait as the scheduler allows."""


class PromptTooLong(V4CError):
    """A prompt the caches cannot hold."""


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # strings that end the text, not sent
    stop_ids: frozenset[int] = frozenset()  # ids that end generation, not decoded
    logprobs: int | None = None  # None: none; k: the sampled id's and the k most likely
    skip_special_tokens: bool = False
    penalties: Penalties = Penalties()  # on the row's logits before sampling (greedy too)


@dataclass
class Output:
    """What one step gave one request."""

    tokens: list[int]
    text: str
    logprobs: list[tuple[int, float, list[tuple[int, float]]]]  # (id, logprob, top k)
    finish: str | None = None  # stop | length | abort, on the last output


@dataclass(eq=False)
class Request:
    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Output], None]
    row: int | None = None
    fed: int = 0  # prompt tokens fed so far
    tokens: list[int] = field(default_factory=list)
    cancelled: bool = False
    finish: str | None = None
    sampler: Sampler | None = None
    text: TextStream | None = None


class Scheduler:
    def __init__(
        self,
        engine: RowEngine,
        tokenizer: V4Tokenizer,
        *,
        max_waiting: int = 256,
        prefill_chunk: int = 256,
        drafter: RowDrafter | None = None,
    ):
        """`drafter`: decode greedy requests speculatively with it (`rowdraft.py`)."""
        self.engine, self.tokenizer, self.drafter = engine, tokenizer, drafter
        self.max_waiting, self.prefill_chunk = max_waiting, prefill_chunk
        self.max_seq = engine.max_seq
        self.engine.reset(engine.max_batch)
        self.rows: list[Request | None] = [None] * engine.max_batch
        self.waiting: deque[Request] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # engine steps run (for /metrics)

    # -- from any thread ------------------------------------------------------------------

    def submit(self, group: list[Request]) -> None:
        """Queue requests (a request's `n` choices together, or none of them)."""
        for request in group:
            if len(request.prompt) > self.max_seq or not request.prompt:
                raise PromptTooLong(
                    f"the prompt has {len(request.prompt)} tokens; this server's caches hold "
                    f"at most {self.max_seq} (--max-seq {self.max_seq})"
                )
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self.waiting) + len(group) > self.max_waiting:
                raise QueueFull(f"{len(self.waiting)} requests are waiting already")
            self.waiting.extend(group)
            self._wake.notify()

    def cancel(self, request: Request) -> None:
        """Stop a request (its client went away); its row is freed at the next step."""
        request.cancelled = True
        with self._wake:
            self._wake.notify()

    @property
    def running(self) -> int:
        return sum(r is not None for r in self.rows)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="v4c-scheduler", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """End the loop after its current step: every request still waiting or running
        ends with "abort". `wait`: until the loop has ended (not from a signal handler)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is None:
            self._abort_all()
        elif wait:
            self._thread.join()

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self.waiting or self.running):
                    self._wake.wait()
                if self._stopping:
                    break
            try:
                self.step()
            except Exception:  # the requests of a failed step end; the server goes on
                _log.exception("a scheduler step failed; its requests end with 'abort'")
                for request in [r for r in self.rows if r is not None]:
                    self._finish(request, "abort")
        self._abort_all()

    def step(self) -> bool:
        """Admit, feed, sample: one step of every running request. False: nothing to do."""
        self._admit()
        feeds = self._feeds()
        if not feeds:
            return False
        drafted = [r for r, _ in feeds if r.fed == len(r.prompt) and self._drafts(r)]
        plain = [(r, ids) for r, ids in feeds if r not in drafted]
        if self.drafter is None:
            self._plain(plain)
        else:  # prefills keep the streams the first draft reads
            prefills = [(r, ids) for r, ids in plain if r.fed < len(r.prompt)]
            decodes = [(r, ids) for r, ids in plain if r.fed == len(r.prompt)]
            self._plain(prefills, hidden=True)
            self._plain(decodes)
        if drafted:
            self._verify(drafted)
        self.steps += 1
        return True

    def _plain(self, feeds: list[tuple[Request, list[int]]], hidden: bool = False) -> None:
        """One engine step over `feeds`; each request whose prompt is then all fed takes
        its next token."""
        if not feeds:
            return
        tokens: list[list[int]] = [[] for _ in self.rows]
        for request, ids in feeds:
            tokens[request.row] = ids
        if hidden:
            logits = self.engine.forward(tokens, hidden=self.drafter.window)
        else:
            logits = self.engine.forward(tokens)
        ready = []
        for request, ids in feeds:
            if request.fed < len(request.prompt):
                request.fed += len(ids)
                if request.fed < len(request.prompt):
                    continue  # more prompt chunks to come
            ready.append(request)
        for request, token in zip(ready, self._sample(ready, logits)):
            first = not request.tokens
            self._accept(request, token, logits[request.row])
            if first and hidden and request.finish is None and self._may_draft(request):
                self.drafter.start(request.row, token)

    def _verify(self, requests: list[Request]) -> None:
        """One verify round of the drafting requests: each takes its emitted tokens in
        order until it stops; the drafter undoes what it fed past them."""
        rows = [r.row for r in requests]
        emitted = self.drafter.round(rows, [r.tokens[-1] for r in requests])
        taken = []
        for request, ids in zip(requests, emitted):
            for n, token in enumerate(ids, start=1):
                self._accept(request, token, None)
                if request.finish is not None:
                    break
            taken.append(n)
        self.drafter.commit(rows, taken, [r.finish is None for r in requests])

    def _may_draft(self, request: Request) -> bool:
        p = request.params
        plain = p.temperature == 0.0 and p.logprobs is None and not p.penalties.active
        return self.drafter is not None and plain

    def _drafts(self, request: Request) -> bool:
        return self._may_draft(request) and self.drafter.ready(request.row)

    def _admit(self) -> None:
        with self._wake:
            for request in self.rows:
                if request is not None and request.cancelled:
                    self._finish(request, "abort")
            self.waiting = deque(r for r in self.waiting if not r.cancelled)
            for row in range(len(self.rows)):
                if self.rows[row] is None and self.waiting:
                    request = self.waiting.popleft()
                    self.engine.clear_row(row)
                    request.row, self.rows[row] = row, request
                    if self.drafter is not None:
                        self.drafter.admit(row, request.prompt)
                    p = request.params
                    request.sampler = Sampler(p.temperature, p.top_k, p.top_p, p.seed)
                    request.text = TextStream(self.tokenizer, p.stop, p.skip_special_tokens)

    def _feeds(self) -> list[tuple[Request, list[int]]]:
        """(request, the tokens it is fed) for this step, in row order."""
        feeds, budget = [], self.prefill_chunk
        for request in self.rows:
            if request is None:
                continue
            if request.fed == len(request.prompt):
                feeds.append((request, [request.tokens[-1]]))
                continue
            chunk = request.prompt[request.fed : request.fed + self.prefill_chunk]
            if len(chunk) <= budget:  # the first prefilling request always fits
                feeds.append((request, chunk))
                budget -= len(chunk)
        return feeds

    def _sample(self, ready: list[Request], logits: torch.Tensor) -> list[int]:
        """Each ready request's next id: its penalties applied to its row (over its prompt
        and reply so far; the log-probabilities reported stay the model's), then greedy
        rows by one argmax together, sampled rows each with its own sampler."""
        penalised = [r for r in ready if r.params.penalties.active]
        if penalised:
            logits = logits.clone()
            for r in penalised:
                row = slice(r.row, r.row + 1)
                logits[row] = r.params.penalties.apply(logits[row], [r.prompt], [r.tokens])
        picked: dict[int, int] = {}
        greedy = [i for i, r in enumerate(ready) if r.params.temperature == 0.0]
        if greedy:
            rows = [ready[i].row for i in greedy]
            for i, token in zip(greedy, logits[rows].argmax(dim=-1).tolist()):
                picked[i] = token
        for i, request in enumerate(ready):
            if i not in picked:
                row = request.row
                picked[i] = int(request.sampler.sample(logits[row : row + 1])[0])
        return [picked[i] for i in range(len(ready))]

    def _accept(self, request: Request, token: int, logits: torch.Tensor | None) -> None:
        """`logits`: the row's, for its log-probabilities (None in a verify round, whose
        requests ask for none)."""
        p = request.params
        request.tokens.append(token)
        logprobs = [] if p.logprobs is None else [_logprobs(logits, token, p.logprobs)]
        if token in p.stop_ids:  # not decoded: what was held back goes out
            text, finish = request.text.flush(), "stop"
        else:
            text, stopped = request.text.push(token)
            held = len(request.prompt) + len(request.tokens) - 1  # what the caches hold then
            if stopped:
                finish = "stop"
            elif len(request.tokens) >= p.max_new_tokens or held >= self.max_seq:
                text, finish = text + request.text.flush(), "length"
            else:
                finish = None
        if finish is not None:
            self._release(request, finish)
        request.emit(Output([token], text, logprobs, finish))

    def _finish(self, request: Request, finish: str) -> None:
        self._release(request, finish)
        request.emit(Output([], "", [], finish))

    def _release(self, request: Request, finish: str) -> None:
        request.finish = finish
        if request.row is not None and self.rows[request.row] is request:
            self.rows[request.row] = None

    def _abort_all(self) -> None:
        with self._wake:
            waiting, self.waiting = list(self.waiting), deque()
        for request in waiting + [r for r in self.rows if r is not None]:
            self._finish(request, "abort")


def _logprobs(logits: torch.Tensor, token: int, k: int) -> tuple[int, float, list]:
    """The sampled id's log-probability under the model and the k most likely ids'."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    top = torch.topk(logp, k) if k else None
    pairs = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
    return token, float(logp[token]), pairs
