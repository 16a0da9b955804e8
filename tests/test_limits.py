"""`v4c.limits`: the cache bytes a token adds, the default and checked `--max-seq`, and the
token budget of a reply, against numbers worked out by hand from the spec (V4_REFERENCE:
CSA keeps one compressed KV entry of head_dim and one indexer key of index_head_dim per 4
tokens, HCA one KV entry per hca_ratio tokens; sliding layers only a fixed window)."""

from __future__ import annotations

import pytest
import torch

from v4c import limits
from v4c.errors import V4CError
from v4c.spec import load_spec
from v4c.spec.layers import expand
from v4c.spec.params import count_params


@pytest.fixture(scope="module")
def tiny():
    return load_spec("tiny")


def by_hand(spec, element: int) -> int:
    a, kinds = spec.attention, expand(spec.layers)
    csa = kinds.count("csa") * (a.head_dim + a.indexer.head_dim) * element / 4
    hca = kinds.count("hca") * a.head_dim * element / a.hca_ratio
    return int(csa + hca)


@pytest.mark.parametrize("dtype, element", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_cache_bytes_per_token(tiny, dtype, element):
    # tiny: 2 CSA layers x (128 + 64) x 4 B / 4 + 1 HCA layer x 128 x 4 B / 128 = 388 B in fp32
    assert limits.cache_bytes_per_token(tiny, dtype) == by_hand(tiny, element)
    assert limits.cache_bytes_per_token(tiny, torch.float32) == 388


def test_default_and_requested_max_seq(tiny, monkeypatch):
    weights = count_params(tiny).total * 4
    monkeypatch.setattr(limits, "free_memory", lambda device: weights + 2 * 388 * 1000)
    chosen = limits.choose_max_seq(tiny, "cpu", torch.float32, None)
    assert chosen.max_seq == 1000 and "the memory" in chosen.why  # half the spare memory
    assert limits.choose_max_seq(tiny, "cpu", torch.float32, 900).max_seq == 900
    with pytest.raises(V4CError, match="at most 1000 do"):
        limits.choose_max_seq(tiny, "cpu", torch.float32, 1001)
    with pytest.raises(V4CError, match="has 1048576 positions, got 1048577"):
        limits.choose_max_seq(tiny, "cpu", torch.float32, 2**20 + 1)
    monkeypatch.setattr(limits, "free_memory", lambda device: 1 << 40)
    roomy = limits.choose_max_seq(tiny, "cpu", torch.float32, None)
    assert roomy.max_seq == 8192 and "--max-seq N" in roomy.why


def test_device_budget_bounds_max_seq(tiny, monkeypatch):
    """--device-gb: the caches share the budget with the weights the device must hold: all
    but the routed experts (4 layers x 8 experts x 3 x 256 x 64 in tiny), which go to host
    memory after the caches, and a slot cache of a step's 2 picks a layer (fp32: 4 B each);
    the device's free memory, far larger, is not the bound."""
    monkeypatch.setattr(limits, "free_memory", lambda device: 1 << 40)
    expert = 3 * 256 * 64
    held = (count_params(tiny).total - 4 * 8 * expert + 4 * 2 * expert) * 4
    budget = (held + 2 * 388 * 1000 + 100) / (1 << 30)  # half the spare: 1000 tokens
    chosen = limits.choose_max_seq(tiny, "cpu", torch.float32, None, device_gb=budget)
    assert chosen.max_seq == 1000 and "device budget" in chosen.why
    assert limits.choose_max_seq(tiny, "cpu", torch.float32, 1000, device_gb=budget)
    with pytest.raises(V4CError, match=r"within --device-gb [\d.]+ .*at most 1000 do"):
        limits.choose_max_seq(tiny, "cpu", torch.float32, 1001, device_gb=budget)
    assert limits.choose_max_seq(tiny, "cpu", torch.float32, None).max_seq == 8192
    # below the weights it must hold: left to v4c.budget, which names the minimum that fits
    assert limits.choose_max_seq(tiny, "cpu", torch.float32, 128, device_gb=0.001).max_seq == 128


def test_reply_budget():
    # n new tokens feed n - 1 back: held + prompt + n - 1 <= max_seq
    assert limits.new_token_budget(0, 5, 7, 50) == (3, True)
    assert limits.new_token_budget(0, 5, 100, 10) == (10, False)
    assert limits.new_token_budget(10, 5, 15, 10) == (1, True)
    limits.check_fits(10, 5, 15, 10)  # fits: the one token comes from the prefill
    with pytest.raises(V4CError, match="conversation's 10 tokens and 6 prompt tokens > max_seq 15"):
        limits.check_fits(10, 6, 15, 10)
    with pytest.raises(V4CError, match="pass --max-seq 25 "):
        limits.check_fits(10, 6, 15, 10)
