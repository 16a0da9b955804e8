"""config.json import and export, both layouts, against the published configs and against
transformers' own `DeepseekV4Config` (the HF layout's authority)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA
from v4c.errors import SpecError
from v4c.spec import layer_table, load_spec
from v4c.spec.config_io import detect_format, spec_from_config, spec_to_config
from v4c.spec.params import count_params

CONFIGS = ["flash_config", "flash_config_initial", "pro_config"]


@pytest.mark.parametrize("name", CONFIGS)
def test_official_round_trip_is_identical(name):
    text = (DATA / f"{name}.json").read_text()
    config = json.loads(text)
    back = spec_to_config(spec_from_config(config, "x"), "official")
    assert back == config
    # same types too (ints stay ints: rope_theta 10000, YaRN factor 16)
    assert json.dumps(back, sort_keys=True) == json.dumps(config, sort_keys=True)


def test_initial_flash_revision_keeps_expert_dtype_absent():
    spec = spec_from_config(json.loads((DATA / "flash_config_initial.json").read_text()), "x")
    assert spec.quant.experts is None and spec.quant.expert_format == "fp8"


def test_import_matches_the_handwritten_spec():
    spec = spec_from_config(
        json.loads((DATA / "flash_config.json").read_text()), "deepseek-v4-flash"
    )
    flash = load_spec("flash")
    assert spec.model_copy(update={"description": flash.description}) == flash


@pytest.mark.parametrize("name", ["tiny", "flash", "pro"])
def test_hf_round_trip(name):
    hf = spec_to_config(load_spec(name), "hf")
    assert detect_format(hf) == "hf"
    assert spec_to_config(spec_from_config(hf, "x"), "hf") == hf


@pytest.mark.parametrize("name", ["flash", "pro"])
def test_hf_export_matches_transformers_reading_the_official_config(name):
    """transformers folds the official config's legacy keys into its own layout; our HF export
    must say the same thing about every model field."""
    from transformers import DeepseekV4Config

    official = json.loads((DATA / f"{name}_config.json").read_text())
    official.pop("quantization_config")  # the HF export describes dequantised weights
    theirs = DeepseekV4Config(**official).to_dict()
    ours = DeepseekV4Config(**spec_to_config(load_spec(name), "hf")).to_dict()
    theirs["rope_parameters"]["compress"].pop("type")  # the legacy key it carries along
    for key in ("layer_types", "mlp_layer_types", "compress_rates", "rope_parameters",
                "partial_rotary_factor", "hidden_size", "num_hidden_layers", "o_groups",
                "index_topk", "routed_scaling_factor", "swiglu_limit", "sliding_window"):  # fmt: skip  # noqa: E501
        assert ours[key] == theirs[key], key


def test_hf_export_builds_a_transformers_model():
    import torch
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    spec = load_spec("tiny")
    config = DeepseekV4Config(**spec_to_config(spec, "hf"))
    with torch.device("meta"):
        model = DeepseekV4ForCausalLM(config)
    layers = model.model.layers
    assert len(layers) == spec.num_layers
    kinds = [row.attention for row in layer_table(spec)[: spec.num_layers]]
    assert [hasattr(layer.self_attn, "compressor") and layer.self_attn.compressor is not None
            for layer in layers] == [k != "sliding" for k in kinds]  # fmt: skip
    # HF keeps the gate's correction bias as a buffer; we count it as a parameter
    n_params = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if name.endswith("e_score_correction_bias")
    )
    assert n_params == count_params(spec).total


def test_unknown_key_and_foreign_model_are_errors():
    config = json.loads((DATA / "flash_config.json").read_text())
    with pytest.raises(SpecError, match="config.json: colour: unknown config key"):
        spec_from_config({**config, "colour": "red"}, "x")
    with pytest.raises(SpecError, match="model_type: expected 'deepseek_v4', got 'llama'"):
        spec_from_config({**config, "model_type": "llama"}, "x")
    with pytest.raises(SpecError, match="compress_ratios: expected num_hidden_layers"):
        spec_from_config({**config, "compress_ratios": [0, 4]}, "x")
    with pytest.raises(SpecError, match="neither the official layout"):
        spec_from_config({"hidden_size": 4}, "x")
