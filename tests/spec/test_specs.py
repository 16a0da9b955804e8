"""The shipped specs: Flash and Pro are the official configs, tiny has every layer kind,
the variants extend them. Expected values are from the published configs (V4_REFERENCE §9, §15)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, SPECS
from v4c.spec import expand, layer_table, load_spec
from v4c.spec.config_io import spec_to_config


@pytest.mark.parametrize("name", ["flash", "pro"])
def test_official_specs_reproduce_the_published_config(name):
    published = json.loads((DATA / f"{name}_config.json").read_text())
    assert spec_to_config(load_spec(SPECS / f"{name}.yaml"), "official") == published


def test_flash_layer_schedule():
    rows = layer_table(load_spec("flash"))
    assert len(rows) == 44 and rows[-1].mtp and rows[-1].attention == "sliding"
    main = rows[:43]
    assert [r.index for r in main if r.attention == "sliding"] == [0, 1]
    assert [r.index for r in main if r.attention == "csa"] == list(range(2, 43, 2))
    assert [r.index for r in main if r.attention == "hca"] == list(range(3, 42, 2))
    assert [r.index for r in main if r.gate == "hash"] == [0, 1, 2]
    assert all(r.has_indexer == (r.attention == "csa") for r in rows)
    assert {(r.rope_theta, r.yarn) for r in main if r.compress_ratio} == {(160000.0, True)}
    assert {(r.rope_theta, r.yarn) for r in rows if not r.compress_ratio} == {(10000.0, False)}
    assert rows[-1].gate == "score"


def test_pro_layer_schedule():
    rows = layer_table(load_spec("pro"))[:61]
    assert [r.index for r in rows if r.compress_ratio == 128] == [0, 1, *range(3, 60, 2)]
    assert [r.index for r in rows if r.compress_ratio == 4] == list(range(2, 61, 2))


def test_tiny_has_every_kind():
    spec = load_spec("tiny")
    rows = layer_table(spec)
    assert {r.attention for r in rows} == {"sliding", "csa", "hca"}
    assert {r.gate for r in rows if not r.mtp} == {"hash", "score"}
    assert sum(r.mtp for r in rows) >= 1
    assert spec.vocab_size == 129280
    assert spec.quant.weights == "fp8" and spec.quant.expert_format == "fp4"


def test_flash_variant_extends_and_overrides():
    spec = load_spec(SPECS / "variants" / "flash-16l-64e.yaml")
    flash = load_spec("flash")
    assert spec.num_layers == 16 and spec.moe.num_experts == 64
    assert len(expand(spec.layers)) == 16
    # deep merge: the untouched MoE fields and everything else come from flash.yaml
    assert spec.moe.top_k == flash.moe.top_k == 6
    assert spec.attention == flash.attention and spec.quant == flash.quant


def test_pro_variant_extends_and_overrides():
    spec = load_spec(SPECS / "variants" / "pro-bf16-window256.yaml")
    pro = load_spec("pro")
    assert (
        spec.attention.sliding_window == 256 and spec.attention.num_heads == pro.attention.num_heads
    )
    assert spec.quant.weights == "bf16" and spec.moe.hash_layers == 0
    assert spec.hidden_size == 7168


def test_user_spec_extends_a_shipped_spec_by_name(tmp_path):
    (tmp_path / "mine.yaml").write_text("extends: flash.yaml\nname: mine\nmoe: {top_k: 8}\n")
    spec = load_spec(tmp_path / "mine.yaml")
    assert spec.name == "mine" and spec.moe.top_k == 8 and spec.moe.num_experts == 256


def test_extends_chain_merges_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: tiny.yaml\nname: a\nmoe: {top_k: 3}\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\nmoe: {num_experts: 16}\n")
    spec = load_spec(tmp_path / "b.yaml")
    assert (spec.name, spec.moe.top_k, spec.moe.num_experts) == ("b", 3, 16)
