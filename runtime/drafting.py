"""Speculative decoding with the MTP block: draft K tokens, verify them in one main-model step.

A round, for every live sequence at once (V4_REFERENCE §11; DeepSeek-V3's MTP, chained):
1. verify: the main model's verify entry over [last token, d_1 .. d_K] at positions
   s .. s+K gives logits at each (p_0 .. p_K) and the last-block streams H_s .. H_{s+K};
   the caches' slots those positions overwrite are saved first (`runtime/rollback.py`).
2. accept (`runtime/speculative.py`): row b keeps a_b drafts and emits a_b + 1 tokens; the
   caller takes n_b <= a_b + 1 of them (a stop id or the length limit may end it early).
3. commit: the positions from s + n_b on are undone in every main cache, so the caches hold
   exactly the fed tokens a non-speculative run would have fed (every emitted token but the
   last).
4. draft: the MTP block's draft entry at positions s .. s+n_b-1, each H_i paired with the token
   after it (§11), drafts d'_1 from its last logits; for K > 1 the block runs again on its
   own output streams and d'_j (chained), one position further each time. The chained steps'
   writes to the MTP block's cache are undone after the last one: the next round feeds
   those positions again, from the main model's streams.
After a prefill the MTP block first runs over the last W positions of the prompt (W: its
sliding window), enough for its ring to hold what a run over every position would: queries
after the prompt see only those W.

Draft tokens are drawn by the same `Sampler` as the main model's (argmax at temperature 0),
from the MTP logits, and their distribution q goes to the acceptance rule, which makes the
output distribution exactly the non-speculative one (greedy: identical tokens).

The perfect drafter (`oracle`, for `v4c bench`): the drafts are the tokens of an earlier
greedy run of the same prompts, and the MTP block does not run; every draft is accepted, so
it measures what verification costs when drafting is free and always right.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from v4c.errors import V4CError
from v4c.runtime.engine import Engine
from v4c.runtime.pays import Pays
from v4c.runtime.sampler import Sampler
from v4c.runtime.speculative import accept


@dataclass
class DraftStats:
    """What speculation did in one generation."""

    rounds: int = 0  # verify steps (main-model steps after the prefill)
    drafted: int = 0  # draft tokens verified (but those after a sequence's last token)
    accepted: int = 0  # draft tokens the main model kept
    emitted: int = 0  # tokens the verify steps produced (taken by the caller)
    stopped: str = ""  # why `auto` turned speculation off ("" while it runs)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.emitted / self.rounds if self.rounds else 0.0


class MtpDrafter:
    def __init__(
        self,
        engine: Engine,
        sampler: Sampler,
        draft_tokens: int,
        oracle: list[list[int]] | None = None,
        auto: bool = False,
    ) -> None:
        limit = engine.plan.options["max_draft"] if "draft" in engine.programs else 0
        if not 1 <= draft_tokens <= limit:
            raise V4CError(
                f"--draft-tokens {draft_tokens}: the plan verifies 1..{limit} draft tokens"
                + ("" if limit else " (it was compiled without the MTP block: --max-draft)")
            )
        self.engine, self.sampler, self.k, self.oracle = engine, sampler, draft_tokens, oracle
        self.pays = Pays() if auto else None  # None: speculate to the end (`mtp`)
        for rollback in engine.rollbacks.values():
            rollback.check(draft_tokens + 1)
        # the MTP block's sliding window: its caches are rings of that many slots
        self.window = max(layout.period for layout in engine.rollbacks["draft"].layouts.values())
        if self.window > engine.max_tokens:  # the MTP block's first step covers its window
            raise V4CError(
                f"the MTP block's window is {self.window} tokens, one step of the plan at most "
                f"{engine.max_tokens}: compile with --max-tokens {self.window} or more"
            )
        self.stats = DraftStats()
        self.fed: list[list[int]] = []  # per sequence: its last `window` fed tokens
        self.drafts: dict[int, tuple[list[int], torch.Tensor | None]] = {}  # row -> (d, q)
        self.prompt_lengths: list[int] = []  # each sequence's length after its prefill
        self._pending: tuple | None = None

    # -- the steps generate() calls ----------------------------------------------------------

    def prefill(self, prompts: list[list[int]], reset: bool) -> torch.Tensor:
        """The main model's prefill (keeping its streams); returns the last logits. Starts
        the statistics of a new generation."""
        self.stats = DraftStats()
        if reset:
            self.fed = [[] for _ in prompts]
        for b, prompt in enumerate(prompts):
            self.fed[b] = (self.fed[b] + list(prompt))[-self.window :]
        logits = self.engine.forward([list(p) for p in prompts], hidden=self.window)
        self.prompt_lengths = list(self.engine.lengths)
        return logits

    def plain(self, tokens: list[list[int]]) -> torch.Tensor:
        """A plain decode step (tokens[b]: [] or sequence b's last token) that keeps what
        drafting needs (the main model's streams, the fed tokens), so `start` can follow."""
        for b, ids in enumerate(tokens):
            self.fed[b] = (self.fed[b] + ids)[-self.window :]
        return self.engine.forward(tokens, hidden=self.window)

    def start(self, rows: list[int], first: list[int]) -> None:
        """Draft for `rows` after a prefill: `first` is each one's sampled token."""
        if self.oracle is not None:
            self._oracle_drafts(rows)
            return
        engine = self.engine
        tails = [engine.hidden_tail[b] for b in rows]
        for n, members in _by_count([tail.shape[0] for tail in tails]).items():
            picked = [rows[i] for i in members]
            ids = [(self.fed[b] + [first[i]])[-n:] for i, b in zip(members, picked)]
            starts = [engine.lengths[b] - n for b in picked]
            hidden = torch.stack([tails[i] for i in members])
            self._draft(picked, ids, hidden, starts)

    def fits(self, rows: list[int]) -> bool:
        """Whether a verify step (K + 1 positions) fits every row's caches."""
        return all(self.engine.lengths[b] + self.k + 1 <= self.engine.max_seq for b in rows)

    def propose(self, rows: list[int], last: list[int]) -> list[list[int]]:
        """Verify each row's drafts after its last token; returns the tokens each row emits
        (its kept drafts, then the main model's own token). Call `commit` next."""
        drafts = [self.drafts[b][0] for b in rows]
        fed = [[t, *d] for t, d in zip(last, drafts)]

        snap = self.engine.rollbacks["verify"].save(
            torch.tensor(rows, device=self.engine.device),
            torch.tensor([self.engine.lengths[b] for b in rows], device=self.engine.device),
            self.k + 1,
        )
        outputs = self.engine.feed("verify", rows, {"ids": torch.tensor(fed)})
        logits = outputs["logits"].float()
        draft = torch.tensor(drafts, device=logits.device)
        q = None
        if self.sampler.temperature > 0.0 and self.oracle is None:
            q = torch.stack([self.drafts[b][1] for b in rows])
        elif self.sampler.temperature > 0.0:  # a deterministic drafter: q is one-hot
            q = torch.zeros(*draft.shape, logits.shape[-1], device=logits.device)
            q.scatter_(-1, draft[..., None], 1.0)
        verdict = accept(self.sampler, draft, logits, q)
        counts = verdict.accepted.tolist()
        emitted = [row[: a + 1] for row, a in zip(verdict.tokens.tolist(), counts)]
        self._pending = (rows, snap, outputs["hidden"], fed, counts, emitted)
        return emitted

    def commit(self, taken: list[int], live: list[bool]) -> None:
        """Row i of the last `propose` took the first `taken[i]` of the tokens it emitted;
        undo the rest of what it fed, then draft again for the rows still `live`."""
        rows, snap, hidden, fed, counts, emitted = self._pending
        self._pending = None
        self._count(taken, counts)
        engine = self.engine
        keep = torch.tensor(taken, device=engine.device)
        engine.rollbacks["verify"].restore(snap, keep)
        engine.keep_hidden(rows, hidden, self.window, taken)
        starts = [engine.lengths[b] for b in rows]
        for b, n, ids in zip(rows, taken, fed):
            engine.lengths[b] += n
            self.fed[b] = (self.fed[b] + ids[:n])[-self.window :]
        if self.oracle is not None:
            self._oracle_drafts([b for b, ok in zip(rows, live) if ok])
            return
        for n, members in _by_count([t if ok else 0 for t, ok in zip(taken, live)]).items():
            picked = [rows[i] for i in members]
            ids = [emitted[i][:n] for i in members]
            self._draft(picked, ids, hidden[members, :n], [starts[i] for i in members])

    def _count(self, taken: list[int], accepted: list[int]) -> None:
        """Drafts the rows could use: a row that stopped at its n-th token (n <= a, all
        drafts) never needed the drafts after it, which count as neither kept nor rejected."""
        stats = self.stats
        stats.rounds += 1
        stats.emitted += sum(taken)
        for n, a in zip(taken, accepted):
            used = n if n <= a else self.k
            stats.drafted += used
            stats.accepted += min(a, used)

    # -- drafting -----------------------------------------------------------------------------

    def _draft(self, rows, ids, hidden, starts) -> None:
        """The MTP block at positions starts[i] + [0, T) of `rows`, then K - 1 chained steps;
        stores each row's K drafts (and, sampling, their distributions)."""
        engine, device = self.engine, self.engine.device
        out = engine.feed("draft", rows, {"mtp_ids": torch.tensor(ids), "hidden": hidden}, starts)
        position = [s + len(i) for s, i in zip(starts, ids)]  # of the first chained step
        rollback = engine.rollbacks["draft"]
        chain = None
        if self.k > 1:  # undone below: the next round feeds these positions again
            chain = rollback.save(
                torch.tensor(rows, device=device), torch.tensor(position, device=device), self.k - 1
            )
        drafts, dists = [], []
        for j in range(self.k):
            logits = out["logits"][:, -1].float()
            token = self.sampler.sample(logits)
            drafts.append(token)
            if self.sampler.temperature > 0.0:
                dists.append(self.sampler.probabilities(logits))
            if j + 1 < self.k:
                host = {"mtp_ids": token[:, None], "hidden": out["hidden"][:, -1:]}
                out = engine.feed("draft", rows, host, [p + j for p in position])
        if chain is not None:
            rollback.restore(chain, torch.zeros(len(rows), dtype=torch.int64, device=device))
        tokens = torch.stack(drafts, dim=1).tolist()  # [b, K]
        q = torch.stack(dists, dim=1) if dists else None
        for i, b in enumerate(rows):
            self.drafts[b] = (tokens[i], None if q is None else q[i])

    def _oracle_drafts(self, rows: list[int]) -> None:
        """The perfect drafter: the next K tokens of the earlier greedy run."""
        for b in rows:
            done = self.engine.lengths[b] - self.prompt_lengths[b] + 1  # tokens emitted so far
            ahead = self.oracle[b][done : done + self.k]
            ahead += [0] * (self.k - len(ahead))  # past its end: any id (the run stops first)
            self.drafts[b] = (ahead, None)


def _by_count(counts: list[int]) -> dict[int, list[int]]:
    """count -> the indices with it, but those of count 0: rows that draft from as many
    positions run in one step."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(counts):
        if n:
            groups.setdefault(n, []).append(i)
    return groups
