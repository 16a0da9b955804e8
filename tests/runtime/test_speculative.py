"""Acceptance of drafts against the rule's own consequences, worked out by hand.

Sampling: on explicit p and q, speculative sampling emits token x by the accept path with
probability min(p, q)(x) and by the reject path with (p - q)+(x) (so p(x) in all), and the
bonus token after K accepted drafts with p_K(x); the draws are checked against those cells
by chi-square (alpha = 0.001, `tests/helpers/stats.py`) at fixed seeds. Greedy: hand cases
and the argmax chain. Batches: rows of one step keep different numbers of drafts."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.dispatch import DispatchCounter
from tests.helpers.stats import assert_fits
from v4c.errors import SamplingError
from v4c.runtime.sampler import Sampler
from v4c.runtime.speculative import PAD, accept

N = 40_000  # rows per sampled check: one batched call


def _logits(probs: list[list[float]], rows: int) -> torch.Tensor:
    """Logits [rows, len(probs), V] whose softmax at temperature 1 is probs[j] at position j."""
    table = [[math.log(p) if p > 0 else float("-inf") for p in row] for row in probs]
    return torch.tensor(table).expand(rows, -1, -1).contiguous()


def _drafts(q: list[list[float]], rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draft ids [rows, K] drawn from q_j at position j (their own generator), and q itself."""
    gen = torch.Generator().manual_seed(seed)
    q_t = torch.tensor(q)
    draft = torch.stack([torch.multinomial(qj, rows, True, generator=gen) for qj in q_t], 1)
    return draft, q_t.expand(rows, -1, -1).contiguous()


def _counts(tokens: torch.Tensor, vocab: int) -> list[int]:
    return torch.bincount(tokens, minlength=vocab).tolist()


# V = 5; every cell kind is present: q > p, p > q, q = p, p = 0 < q, q = 0 < p
P0 = [0.1, 0.4, 0.2, 0.3, 0.0]
Q0 = [0.3, 0.1, 0.2, 0.0, 0.4]
P1 = [0.05, 0.15, 0.5, 0.0, 0.3]
Q1 = [0.25, 0.25, 0.25, 0.25, 0.0]
P2 = [0.2, 0.2, 0.1, 0.4, 0.1]


def _accept_mass(p: list[float], q: list[float]) -> float:
    return sum(min(a, b) for a, b in zip(p, q))


def test_one_draft_accept_reject_and_bonus_cells():
    # min(P0, Q0) = [.1, .1, .2, 0, 0] (accept, mass .4); (P0 - Q0)+ = [0, .3, 0, .3, 0]
    # (reject, mass .6); the bonus after an accepted draft is drawn from P1
    draft, q = _drafts([Q0], N, seed=1)
    out = accept(Sampler(temperature=1.0, seed=2), draft, _logits([P0, P1], N), q)
    kept = out.accepted == 1
    assert set(out.accepted.tolist()) <= {0, 1}
    assert torch.equal(out.tokens[kept, 0], draft[kept, 0])  # an accepted draft is emitted
    assert (out.tokens[~kept, 1] == PAD).all()
    accept_cells = [min(a, b) for a, b in zip(P0, Q0)]
    reject_cells = [max(a - b, 0.0) for a, b in zip(P0, Q0)]
    joint = _counts(out.tokens[kept, 0], 5) + _counts(out.tokens[~kept, 0], 5)
    assert_fits(joint, accept_cells + reject_cells)
    assert_fits(_counts(out.tokens[:, 0], 5), P0)  # the emitted token is distributed as p
    assert_fits(_counts(out.tokens[kept, 1], 5), P1)  # the bonus path


def test_draft_equal_to_p_is_always_accepted_and_far_from_p_mostly_rejected():
    draft, q = _drafts([P0], N, seed=3)
    out = accept(Sampler(temperature=1.0, seed=4), draft, _logits([P0, P1], N), q)
    assert out.accepted.eq(1).all()
    assert_fits(_counts(out.tokens[:, 1], 5), P1)
    # q puts its mass where p is small: accept mass .1, the rest resampled from (p - q)+
    far = [0.0, 0.0, 0.1, 0.0, 0.9]
    draft, q = _drafts([far], N, seed=5)
    out = accept(Sampler(temperature=1.0, seed=6), draft, _logits([P0, P1], N), q)
    assert_fits(_counts(out.accepted, 2), [0.9, 0.1])
    residual = [0.1, 0.4, 0.1, 0.3, 0.0]  # (P0 - far)+, mass .9
    assert_fits(_counts(out.tokens[out.accepted == 0, 0], 5), [r / 0.9 for r in residual])


def test_a_deterministic_drafter_passes_one_hot_q():
    # the draft is token 1 whatever p is (a perfect drafter's tokens from an earlier run):
    # kept with probability P0[1] = .4, else resampled from P0 without token 1
    draft, q = _drafts([[0.0, 1.0, 0.0, 0.0, 0.0]], N, seed=11)
    out = accept(Sampler(temperature=1.0, seed=12), draft, _logits([P0, P1], N), q)
    assert_fits(_counts(out.accepted, 2), [0.6, 0.4])
    assert_fits(_counts(out.tokens[:, 0], 5), P0)


def test_two_drafts_chain():
    a0, a1 = _accept_mass(P0, Q0), _accept_mass(P1, Q1)
    draft, q = _drafts([Q0, Q1], N, seed=7)
    out = accept(Sampler(temperature=1.0, seed=8), draft, _logits([P0, P1, P2], N), q)
    assert_fits(_counts(out.accepted, 3), [1 - a0, a0 * (1 - a1), a0 * a1])
    assert_fits(_counts(out.tokens[:, 0], 5), P0)
    after_one = out.accepted >= 1
    assert_fits(_counts(out.tokens[after_one, 1], 5), P1)
    assert_fits(_counts(out.tokens[out.accepted == 2, 2], 5), P2)
    # an emitted row is the kept drafts, then one token; PAD after it
    for b in range(200):
        row, n = out.tokens[b].tolist(), out.accepted[b].item()
        assert row[:n] == draft[b, :n].tolist()
        assert PAD not in row[: n + 1] and row[n + 1 :] == [PAD] * (2 - n)


def test_p_and_q_are_the_samplers_filtered_distributions():
    # temperature 0.5 and top-k 3 reshape both rows: the emitted token follows the
    # sampler's p (its `probabilities`, checked against a hand oracle in test_sampler)
    sampler = Sampler(temperature=0.5, top_k=3, seed=9)
    raw = torch.tensor([[0.3, -0.2, 1.0, 0.4, -1.0], [0.0, 0.5, -0.5, 1.5, 0.2]])
    logits = raw.expand(N, -1, -1).contiguous()
    p = sampler.probabilities(raw)
    q = sampler.probabilities(torch.tensor([[1.0, 0.0, 0.2, -0.3, 0.9]]))
    draft, q_rows = _drafts(q.tolist(), N, seed=10)
    out = accept(sampler, draft, logits, q_rows)
    assert_fits(_counts(out.tokens[:, 0], 5), p[0].tolist())
    assert_fits(_counts(out.tokens[out.accepted == 1, 1], 5), p[1].tolist())


def test_sampled_rows_keep_different_numbers_of_drafts():
    # hand cases with no randomness left: p >= q at a draft accepts it surely, p = 0
    # rejects it surely, a one-hot p fixes the resampled or bonus token
    hot = [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    flat = [0.25, 0.25, 0.25, 0.25]
    p = [
        [flat, flat, hot[0]],  # row 0: both drafts kept (p = q), bonus token 3
        [hot[1], flat, flat],  # row 1: draft 0 (token 0) has p = 0: rejected, resampled 2
        [flat, hot[2], flat],  # row 2: draft 0 kept, draft 1 (token 3) rejected, resampled 1
    ]
    logits = torch.stack([_logits(rows, 1)[0] for rows in p])
    draft = torch.tensor([[1, 2], [0, 1], [2, 3]])
    q = torch.tensor([flat, flat]).expand(3, -1, -1)
    for seed in range(5):
        out = accept(Sampler(temperature=1.0, seed=seed), draft, logits, q)
        assert out.accepted.tolist() == [2, 0, 1]
        assert out.tokens.tolist() == [[1, 2, 3], [2, PAD, PAD], [2, 1, PAD]]


def test_greedy_hand_cases():
    # argmax per position; drafts agreeing for 3, 0 and 2 tokens
    best = torch.tensor([[2, 4, 1, 5], [3, 0, 0, 0], [2, 4, 0, 3]])
    logits = torch.nn.functional.one_hot(best, 6).float() * 3.0 - 1.0
    draft = torch.tensor([[2, 4, 1], [1, 0, 0], [2, 4, 1]])
    out = accept(Sampler(), draft, logits)
    assert out.accepted.tolist() == [3, 0, 2]
    assert out.tokens.tolist() == [[2, 4, 1, 5], [3, PAD, PAD, PAD], [2, 4, 0, PAD]]


def test_greedy_emits_the_argmax_chain_and_ties_keep_the_lower_id():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 4, 7, generator=gen)
    best = logits.argmax(-1)
    draft = torch.where(torch.rand(64, 3, generator=gen) < 0.7, best[:, :3], (best[:, :3] + 1) % 7)
    out = accept(Sampler(), draft, logits)
    for b in range(64):
        n = out.accepted[b].item()
        assert draft[b, :n].tolist() == best[b, :n].tolist()
        assert n == 3 or draft[b, n] != best[b, n]
        assert out.tokens[b, : n + 1].tolist() == best[b, : n + 1].tolist()
    tie = torch.tensor([[[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]])
    out = accept(Sampler(), torch.tensor([[2]]), tie)
    assert out.accepted.tolist() == [0] and out.tokens.tolist() == [[1, PAD]]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_acceptance_never_syncs(temperature):
    sampler = Sampler(temperature=temperature, top_p=0.9, seed=0)
    logits, draft = torch.randn(3, 3, 11), torch.randint(0, 11, (3, 2))
    q = torch.softmax(torch.randn(3, 2, 11), -1)
    sampler.generator(logits.device)  # made on first use: outside a captured step
    with DispatchCounter() as counter:
        accept(sampler, draft, logits, q)
    assert counter.sync_count == 0, counter.report()


def test_bad_shapes_name_the_argument():
    sampler, logits = Sampler(temperature=1.0), torch.zeros(2, 3, 5)
    with pytest.raises(SamplingError, match="draft_probs"):
        accept(sampler, torch.zeros(2, 2, dtype=torch.int64), logits)
    with pytest.raises(SamplingError, match=r"logits must be \[2, 2, V\]"):
        accept(sampler, torch.zeros(2, 1, dtype=torch.int64), logits, torch.zeros(2, 1, 5))
    with pytest.raises(SamplingError, match=r"draft_probs must be \[2, 2, 5\]"):
        accept(sampler, torch.zeros(2, 2, dtype=torch.int64), logits, torch.zeros(2, 2, 4))
    with pytest.raises(SamplingError, match="int64 draft"):
        accept(Sampler(), torch.zeros(2, 2), logits)


@pytest.mark.gpu
def test_cuda_acceptance_never_syncs_and_replays_in_a_cuda_graph():
    sampler = Sampler(temperature=0.8, top_k=50, top_p=0.9, seed=0)
    logits = torch.randn(4, 3, 1000, device="cuda")
    draft = torch.randint(0, 1000, (4, 2), device="cuda")
    q = torch.softmax(torch.randn(4, 2, 1000, device="cuda"), -1)
    generator = sampler.generator("cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        accept(sampler, draft, logits, q)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        captured = accept(sampler, draft, logits, q)
    generator.manual_seed(1)
    graph.replay()
    replayed = (captured.accepted.clone(), captured.tokens.clone())
    generator.manual_seed(1)
    torch.cuda.set_sync_debug_mode("error")
    try:
        eager = accept(sampler, draft, logits, q)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(eager.accepted, replayed[0]) and torch.equal(eager.tokens, replayed[1])
