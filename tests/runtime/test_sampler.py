"""The sampler against distributions worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from v4c.runtime.sampler import Sampler


def _logits(probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is `probs` (a row of a [1, V] batch)."""
    return torch.tensor([[math.log(p) for p in probs]], dtype=torch.float32)


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9], [5.0, 0.0, 0.0, 4.0]])
    assert Sampler().sample(logits).tolist() == [1, 0]
    assert Sampler().sample(logits).dtype == torch.int64


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


def test_top_k_by_hand_on_unsorted_logits():
    # probs 0.2, 0.1, 0.4, 0.3 -> top-2 keeps ids 2 and 3: 0.4/0.7, 0.3/0.7
    probs = Sampler(temperature=1.0, top_k=2).probabilities(_logits([0.2, 0.1, 0.4, 0.3]))
    torch.testing.assert_close(probs, torch.tensor([[0.0, 0.0, 4 / 7, 3 / 7]]))


def test_temperature_scales_logits():
    # logits log 0.8, log 0.2 at T = 2: softmax of halves = sqrt ratios 2:1
    probs = Sampler(temperature=2.0).probabilities(_logits([0.8, 0.2]))
    torch.testing.assert_close(probs, torch.tensor([[2 / 3, 1 / 3]]))


def test_top_k_one_equals_greedy():
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(1))
    sampled = Sampler(temperature=1.5, top_k=1, seed=3).sample(logits)
    assert sampled.tolist() == logits.argmax(-1).tolist()


def test_same_seed_same_samples():
    logits = torch.zeros(4, 100)
    a = [Sampler(temperature=1.0, seed=7).sample(logits).tolist() for _ in range(2)]
    first, second = Sampler(temperature=1.0, seed=7), Sampler(temperature=1.0, seed=8)
    assert a[0] == a[1]
    draws = [first.sample(logits).tolist() for _ in range(5)]
    assert draws != [second.sample(logits).tolist() for _ in range(5)]


def test_frequencies_of_a_three_way_distribution():
    # 2000 draws of (0.6, 0.3, 0.1): each count has sd <= sqrt(2000 * .25) ~ 22, so a
    # +-80 band (over 3.5 sd) fails only on a real bias.
    sampler = Sampler(temperature=1.0, seed=0)
    draws = sampler.sample(_logits([0.6, 0.3, 0.1]).expand(2000, 3)).tolist()
    counts = [draws.count(i) for i in range(3)]
    for count, expected in zip(counts, [1200, 600, 200], strict=True):
        assert abs(count - expected) < 80, counts


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
    with pytest.raises(ValueError, match=name):
        Sampler(**kwargs)


def test_logits_must_be_two_dimensional():
    with pytest.raises(ValueError, match="batch, vocab"):
        Sampler().sample(torch.zeros(5))
