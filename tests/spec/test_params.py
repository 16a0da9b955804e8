"""Parameter counts against the published totals and against shapes counted by hand."""

from __future__ import annotations

import pytest

from v4c.spec import load_spec
from v4c.spec.params import count_params


@pytest.mark.parametrize(
    "name, total, active, mtp",
    [
        ("flash", 284e9, 13e9, 6.6e9),  # published: 284B total / 13B active
        ("pro", 1.57e12, 49e9, 25.8e9),  # published: 1.6T (1.57T by shapes) / 49B active
    ],
)
def test_published_totals(name, total, active, mtp):
    count = count_params(load_spec(name))
    assert count.total == pytest.approx(total, rel=0.01)
    assert count.active == pytest.approx(active, rel=0.03)
    assert count.mtp == pytest.approx(mtp, rel=0.01)


def test_tiny_parts_counted_by_hand():
    count = count_params(load_spec("tiny")).by_part
    d, v = 256, 129280
    assert count["embedding"] == count["lm_head"] == v * d
    # wq_a 128x256, wq_b 512x128, wkv 128x256, wo_a (2*64)x256, wo_b 256x128, sink 4
    per_layer = 128 * 256 + 512 * 128 + 128 * 256 + 128 * 256 + 256 * 128 + 4
    assert count["attention"] == 4 * per_layer
    # CSA (x2): wkv+wgate 256x256 each, ape 4x256; HCA: 128x256 each, ape 128x128
    assert count["compressors"] == 2 * (2 * 256 * 256 + 4 * 256) + (2 * 128 * 256 + 128 * 128)
    # per CSA layer: wq_b (16*64)x128, weights_proj 16x256, compressor 2x(128x256) + ape 4x128
    assert count["indexers"] == 2 * (1024 * 128 + 16 * 256 + 2 * 128 * 256 + 4 * 128)
    # 8 experts x (w1, w2, w3 of 64x256); one shared expert; gate 8x256 (+bias 8 on score layers)
    assert count["routed_experts"] == 4 * 8 * 3 * 64 * 256
    assert count["shared_experts"] == 4 * 3 * 64 * 256
    assert count["router"] == 4 * 8 * 256 + 2 * 8
    # per layer: fn 24x1024, base 24, scale 3, twice; head: fn 4x1024, base 4, scale 1
    assert count["hc"] == 4 * 2 * (24 * 1024 + 27) + (4 * 1024 + 5)


def test_active_is_total_minus_unused_experts_and_embedding_rows():
    spec = load_spec("tiny")
    count = count_params(spec)
    unused = spec.num_layers * (8 - 2) * 3 * 64 * 256  # 6 of 8 experts, w1/w2/w3 of 64x256
    gathered = 256  # one row of the 129280 x 256 embedding
    assert count.active == count.total - count.by_part["embedding"] + gathered - unused
