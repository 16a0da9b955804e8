"""The sampler against distributions worked out by hand and by a plain-Python oracle of
its rule (softmax(logits / T); keep the k best; keep the smallest most-likely set reaching
p; ties rank the lower id first), draws against those distributions by chi-square, and
its device-side contract: no host sync, no allocation with `out=` and `buffers=`."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.dispatch import DispatchCounter
from tests.helpers.stats import CHI2_999
from v4c.errors import SamplingError, V4CError
from v4c.runtime.sampler import Sampler


def _logits(probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is `probs` (a row of a [1, V] batch)."""
    return torch.tensor([[math.log(p) for p in probs]], dtype=torch.float32)


def _oracle(logits: list[float], temperature: float, top_k: int, top_p: float) -> list[float]:
    """The sampling distribution of one row by the rule, in plain Python (float64)."""
    ranked = sorted(range(len(logits)), key=lambda i: (-logits[i], i))
    if 0 < top_k < len(logits):
        ranked = ranked[:top_k]
    top = logits[ranked[0]] / temperature
    weight = {i: math.exp(logits[i] / temperature - top) for i in ranked}
    total = sum(weight.values())
    kept, mass = [], 0.0
    for i in ranked:
        if mass >= top_p:
            break
        kept.append(i)
        mass += weight[i] / total
    norm = sum(weight[i] for i in kept)
    return [weight[i] / norm if i in kept else 0.0 for i in range(len(logits))]


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9], [5.0, 0.0, 0.0, 4.0]])
    assert Sampler().sample(logits).tolist() == [1, 0]
    assert Sampler().sample(logits).dtype == torch.int64
    out = torch.full((2,), -1, dtype=torch.int64)
    assert Sampler(top_k=1, top_p=0.5).sample(logits, out=out) is out
    assert out.tolist() == [1, 0]
    assert Sampler().probabilities(logits).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]


def test_top_p_cut_by_hand():
    # probs 0.5, 0.3, 0.15, 0.05; p = 0.7: 0.5 < 0.7, 0.5 + 0.3 = 0.8 >= 0.7, so the
    # smallest set reaching p is the first two -> renormalised 0.5/0.8, 0.3/0.8.
    logits = _logits([0.5, 0.3, 0.15, 0.05])
    probs = Sampler(temperature=1.0, top_p=0.7).probabilities(logits)
    torch.testing.assert_close(probs, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    # p = 0.9: 0.8 < 0.9, 0.95 >= 0.9 -> three tokens, 0.5/0.95, 0.3/0.95, 0.15/0.95
    probs = Sampler(temperature=1.0, top_p=0.9).probabilities(logits)
    torch.testing.assert_close(probs, torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)


def test_top_p_always_keeps_the_most_likely_token():
    # tiny p: the first token alone already reaches it
    logits = _logits([0.1, 0.6, 0.3])
    probs = Sampler(temperature=1.0, top_p=1e-6).probabilities(logits)
    assert probs.tolist() == [[0.0, 1.0, 0.0]]


def test_top_p_ties_keep_the_lower_id():
    # 0.4, 0.3, 0.3 at p = 0.6: {0, 1} and {0, 2} both reach it with two tokens; the lower
    # id ranks first, so token 1 stays: 0.4/0.7, 0.3/0.7
    probs = Sampler(temperature=1.0, top_p=0.6).probabilities(_logits([0.4, 0.3, 0.3]))
    torch.testing.assert_close(probs, torch.tensor([[4 / 7, 3 / 7, 0.0]]))


def test_top_k_by_hand_on_unsorted_logits():
    # probs 0.2, 0.1, 0.4, 0.3 -> top-2 keeps ids 2 and 3: 0.4/0.7, 0.3/0.7
    probs = Sampler(temperature=1.0, top_k=2).probabilities(_logits([0.2, 0.1, 0.4, 0.3]))
    torch.testing.assert_close(probs, torch.tensor([[0.0, 0.0, 4 / 7, 3 / 7]]))


def test_top_k_keeps_exactly_k_with_ties_by_lower_id():
    # three logits tie for second place: k = 2 keeps the best and the lowest tied id
    logits = torch.tensor([[1.0, 2.0, 3.0, 2.0, 2.0, 0.0]])
    probs = Sampler(temperature=1.0, top_k=2).probabilities(logits)
    assert probs.nonzero()[:, 1].tolist() == [1, 2]
    torch.testing.assert_close(probs[0, [2, 1]], torch.softmax(torch.tensor([3.0, 2.0]), 0))


def test_top_k_keeps_the_k_best_of_random_rows():
    logits = torch.randn(16, 200, generator=torch.Generator().manual_seed(2))
    probs = Sampler(temperature=0.7, top_k=5).probabilities(logits)
    assert (probs > 0).sum(-1).tolist() == [5] * 16
    best = logits.topk(5, dim=-1).indices.sort(-1).values  # random logits have no ties
    assert torch.equal((probs > 0).nonzero()[:, 1].view(16, 5), best)


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(3)) * 2
    for top_p in (0.3, 0.8, 0.95):
        probs = Sampler(temperature=1.0, top_p=top_p).probabilities(logits)
        for row, got in zip(logits.tolist(), probs, strict=True):
            want = torch.tensor(_oracle(row, 1.0, 0, top_p))
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)  # fp32 vs float64
            full = sorted(torch.softmax(torch.tensor(row), 0).tolist(), reverse=True)
            kept = int((got > 0).sum())
            assert sum(full[:kept]) >= top_p - 1e-6 and sum(full[: kept - 1]) < top_p


def test_temperature_scales_logits():
    # logits log 0.8, log 0.2 at T = 2: softmax of halves = sqrt ratios 2:1
    probs = Sampler(temperature=2.0).probabilities(_logits([0.8, 0.2]))
    torch.testing.assert_close(probs, torch.tensor([[2 / 3, 1 / 3]]))


def test_top_k_one_equals_greedy():
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(1))
    sampled = Sampler(temperature=1.5, top_k=1, seed=3).sample(logits)
    assert sampled.tolist() == logits.argmax(-1).tolist()


SETTINGS = [
    {"temperature": 1.0},
    {"temperature": 0.5},
    {"temperature": 1.7, "top_k": 4},
    {"temperature": 1.0, "top_p": 0.8},
    {"temperature": 0.8, "top_k": 5, "top_p": 0.9},
    {"temperature": 2.0, "top_k": 3, "top_p": 0.6},
]
ROW = [1.2, -0.3, 0.8, 2.0, 0.0, -1.1, 0.5]  # no ties, so the distribution is the rule's alone


@pytest.mark.parametrize(
    "kwargs", SETTINGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items())
)
def test_draw_frequencies_match_the_distribution(kwargs):
    expected = _oracle(ROW, kwargs["temperature"], kwargs.get("top_k", 0), kwargs.get("top_p", 1))
    sampler = Sampler(seed=11, **kwargs)
    logits = torch.tensor([ROW]).expand(20_000, -1)
    torch.testing.assert_close(sampler.probabilities(logits[:1])[0], torch.tensor(expected))
    counts = torch.bincount(sampler.sample(logits), minlength=len(ROW)).tolist()
    kept = [i for i, p in enumerate(expected) if p > 0]
    assert all(counts[i] == 0 for i in range(len(ROW)) if i not in kept), counts
    n = sum(counts)
    chi2 = sum((counts[i] - n * expected[i]) ** 2 / (n * expected[i]) for i in kept)
    assert chi2 < CHI2_999[len(kept) - 1], (chi2, counts, expected)


def test_same_seed_same_samples():
    logits = torch.zeros(4, 100)
    a = [Sampler(temperature=1.0, seed=7).sample(logits).tolist() for _ in range(2)]
    first, second = Sampler(temperature=1.0, seed=7), Sampler(temperature=1.0, seed=8)
    assert a[0] == a[1]
    draws = [first.sample(logits).tolist() for _ in range(5)]
    assert draws != [second.sample(logits).tolist() for _ in range(5)]


def test_out_and_buffers_draw_what_the_plain_call_draws():
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(4))
    plain = Sampler(temperature=0.9, top_k=10, top_p=0.9, seed=5)
    owned = Sampler(temperature=0.9, top_k=10, top_p=0.9, seed=5)
    out, bufs = torch.empty(6, dtype=torch.int64), owned.buffers(6, 40, "cpu")
    for _ in range(3):
        assert owned.sample(logits, out=out, buffers=bufs) is out
        assert out.tolist() == plain.sample(logits).tolist()


@pytest.mark.parametrize("kwargs", [{}, *SETTINGS])
def test_sampling_never_syncs_and_owned_buffers_never_allocate(kwargs):
    sampler = Sampler(seed=0, **kwargs)
    logits = torch.randn(3, 64)
    out, bufs = torch.empty(3, dtype=torch.int64), sampler.buffers(3, 64, logits.device)
    sampler.generator(logits.device)  # made on first use: outside the captured step
    with DispatchCounter() as owned:
        sampler.sample(logits, out=out, buffers=bufs)
    with DispatchCounter() as plain:
        sampler.sample(logits)
    assert owned.sync_count == 0 and owned.allocation_count == 0, owned.report()
    assert plain.sync_count == 0, plain.report()
    assert sum(owned.ops.values()) > 0  # the counter did see the ops


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(SamplingError, match=name) as err:
        Sampler(**kwargs)
    assert isinstance(err.value, V4CError) and isinstance(err.value, ValueError)


def test_logits_must_be_two_dimensional():
    with pytest.raises(SamplingError, match="batch, vocab"):
        Sampler().sample(torch.zeros(5))


def test_out_and_buffers_must_fit_the_logits():
    sampler = Sampler(temperature=1.0, top_p=0.9)
    logits = torch.zeros(2, 8)
    with pytest.raises(SamplingError, match="out must be int64 \\[2\\]"):
        sampler.sample(logits, out=torch.empty(2, dtype=torch.int32))
    with pytest.raises(SamplingError, match="buffers are for \\[3, 8\\]"):
        sampler.sample(logits, buffers=sampler.buffers(3, 8, "cpu"))
    with pytest.raises(SamplingError, match="other filters"):
        sampler.sample(logits, buffers=Sampler(temperature=1.0).buffers(2, 8, "cpu"))


@pytest.mark.gpu
def test_cuda_sampling_never_syncs_and_replays_in_a_cuda_graph():
    sampler = Sampler(temperature=0.8, top_k=50, top_p=0.9, seed=0)
    logits = torch.randn(4, 1000, device="cuda")
    out, bufs = torch.empty(4, dtype=torch.int64, device="cuda"), sampler.buffers(4, 1000, "cuda")
    generator = sampler.generator("cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        sampler.sample(logits, out=out, buffers=bufs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        sampler.sample(logits, out=out, buffers=bufs)
    generator.manual_seed(1)
    graph.replay()
    replayed = out.clone()
    generator.manual_seed(1)
    torch.cuda.set_sync_debug_mode("error")
    try:
        sampler.sample(logits, out=out, buffers=bufs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(out, replayed)
