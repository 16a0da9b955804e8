"""Checkpoint round trips. Oracles: the quant functions (tested by hand in test_quant), the
§13.1 dtype/shape table read straight from the safetensors headers, the E8M0 scale rule
evaluated with Python's math, and transformers itself: it loads our HF folder with no
missing or unexpected keys, and its own official->HF conversion of an official-named
folder gives the same state dict."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from tests.runtime.checkpoint_helpers import one_thread, rounded, small_spec_with
from v4c.cli import app
from v4c.runtime.checkpoint import load_checkpoint, make_tiny, write_hf, write_official
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.spec import load_spec
from v4c.spec.config_io import spec_to_config
from v4c.spec.tensors import checkpoint_tensors


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def small_spec():
    return small_spec_with()


@pytest.fixture(scope="module")
def small_weights(small_spec):
    return random_weights(small_spec, seed=1)


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory, small_spec, small_weights):
    """The official layout in one file (no index)."""
    folder = tmp_path_factory.mktemp("official")
    write_official(folder, small_spec, small_weights)
    return folder


def test_official_round_trip_is_quantise_dequantise(tmp_path, small_spec, small_weights, capsys):
    write_official(tmp_path, small_spec, small_weights, shards=3)
    spec, loaded = load_checkpoint(tmp_path, dtype=torch.float32, progress=True)
    assert "(3/3)" in capsys.readouterr().err  # the progress bar names the shard
    assert spec.name == tmp_path.name  # from config.json, named after the folder
    assert spec_to_config(spec, "official") == spec_to_config(small_spec, "official")
    infos = checkpoint_tensors(small_spec)
    assert list(loaded) == [t.name for t in infos]
    for t in infos:
        want = rounded(t, small_weights[t.name], small_spec)
        assert loaded[t.name].dtype == want.dtype and torch.equal(loaded[t.name], want), t.name


def test_bf16_load_keeps_fp32_and_int64(official_dir, small_spec, small_weights):
    _, loaded = load_checkpoint(official_dir, small_spec, progress=False)
    for t in checkpoint_tensors(small_spec):
        want = rounded(t, small_weights[t.name], small_spec)
        want = want.to(torch.bfloat16) if t.dtype == "bf16" else want
        assert loaded[t.name].dtype == want.dtype and torch.equal(loaded[t.name], want), t.name


def test_official_files_follow_the_release_table(tmp_path, small_spec, small_weights):
    write_official(tmp_path, small_spec, small_weights, shards=2)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    headers, total = {}, 0
    for shard in shards:
        with safe_open(tmp_path / shard, "pt") as f:
            for name in f.keys():
                s = f.get_slice(name)
                headers[name] = (s.get_dtype(), s.get_shape())
                total += f.get_tensor(name).nbytes
    assert set(headers) == set(index["weight_map"]) and index["metadata"]["total_size"] == total
    # §13.1 with tiny's dims: D 256, q_lora 128, H*d 512, E 8, I 64, V 512
    assert headers["embed.weight"] == ("BF16", [512, 256])
    assert headers["hc_head_fn"] == ("F32", [4, 1024])
    assert headers["layers.0.attn.wq_a.weight"] == ("F8_E4M3", [128, 256])
    assert headers["layers.0.attn.wq_a.scale"] == ("F8_E8M0", [1, 2])
    assert headers["layers.0.attn.wq_b.scale"] == ("F8_E8M0", [4, 1])
    assert headers["layers.1.attn.compressor.ape"] == ("F32", [4, 256])
    assert headers["layers.1.attn.indexer.compressor.wkv.weight"] == ("BF16", [128, 256])
    assert headers["layers.0.ffn.gate.tid2eid"] == ("I64", [512, 2])
    assert headers["layers.3.ffn.gate.bias"] == ("F32", [8])
    assert headers["layers.3.ffn.experts.7.w1.weight"] == ("I8", [64, 128])
    assert headers["layers.3.ffn.experts.7.w1.scale"] == ("F8_E8M0", [64, 8])
    assert headers["layers.3.ffn.experts.7.w2.weight"] == ("I8", [256, 32])
    assert headers["mtp.0.e_proj.weight"] == ("F8_E4M3", [256, 256])
    assert "mtp.0.ffn.gate.bias" in headers and "mtp.0.attn.compressor.ape" not in headers


def test_fp8_scale_bytes_follow_the_rule(official_dir, small_weights):
    w = small_weights["layers.2.attn.wo_b.weight"]  # [256, 128]: two blocks
    with safe_open(official_dir / "model.safetensors", "pt") as f:
        scale = f.get_tensor("layers.2.attn.wo_b.scale").view(torch.uint8)
    for k, block in enumerate(w.split(128, dim=0)):
        assert scale[k, 0].item() == 127 + math.ceil(math.log2(block.abs().max().item() / 448))


def test_hf_round_trip_and_layout(tmp_path, official_dir, small_spec):
    spec, official = load_checkpoint(official_dir, small_spec, dtype=torch.float32, progress=False)
    write_hf(tmp_path, spec, official, dtype=torch.float32)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        up = f.get_tensor("model.layers.3.mlp.experts.gate_up_proj")  # [E, 2I, D]
        assert f.get_slice("model.layers.1.self_attn.sinks").get_dtype() == "F32"
    assert torch.equal(up[5, :64], official["layers.3.ffn.experts.{e}.w1.weight"][5])
    assert torch.equal(up[5, 64:], official["layers.3.ffn.experts.{e}.w3.weight"][5])
    _, back = load_checkpoint(tmp_path, small_spec, dtype=torch.float32, progress=False)
    assert list(back) == [n for n in official if not n.startswith("mtp.")]  # HF has no MTP
    for name, x in back.items():
        assert x.dtype == official[name].dtype and torch.equal(x, official[name]), name


def test_transformers_loads_our_hf_folder(tmp_path, official_dir, small_spec):
    transformers = pytest.importorskip("transformers")
    _, official = load_checkpoint(official_dir, small_spec, dtype=torch.float32, progress=False)
    write_hf(tmp_path / "hf", small_spec, official, dtype=torch.float32)
    # the oracle: an official-named, unquantised folder, converted by HF's own mapping
    # (FP8/FP4 values are exact in bf16, so the plain bf16 copy loses nothing)
    plain = small_spec_with(quant={"weights": "bf16", "experts": "bf16"})
    write_official(tmp_path / "plain", plain, official)
    model = transformers.DeepseekV4ForCausalLM
    ours, info = model.from_pretrained(
        tmp_path / "hf", dtype=torch.float32, output_loading_info=True
    )
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set() and info["error_msgs"] == []
    theirs = model.from_pretrained(tmp_path / "plain", dtype=torch.float32).state_dict()
    state = ours.state_dict()
    assert state.keys() == theirs.keys()
    for name, x in state.items():
        assert torch.equal(x, theirs[name]), name
    pos = state["model.layers.1.self_attn.compressor.indexer.position_bias"]
    assert torch.equal(pos, official["layers.1.attn.indexer.compressor.ape"])
    assert torch.equal(
        state["model.layers.0.mlp.gate.tid2eid"], official["layers.0.ffn.gate.tid2eid"]
    )


def test_convert_cli_to_hf_and_back_to_official(tmp_path, official_dir, small_spec):
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "checkpoint",
            "convert",
            str(official_dir),
            str(tmp_path / "hf"),
            "--to",
            "hf",
            "--dtype",
            "fp32",
        ],
    )
    assert out.exit_code == 0, out.output
    _, want = load_checkpoint(official_dir, small_spec, dtype=torch.float32, progress=False)
    _, got = load_checkpoint(tmp_path / "hf", dtype=torch.float32, progress=False)
    assert all(torch.equal(got[n], want[n]) for n in got) and len(got) == len(want) - sum(
        n.startswith("mtp.") for n in want
    )
    # official -> official re-quantises dequantised values: the values survive unchanged
    out = runner.invoke(
        app,
        ["checkpoint", "convert", str(official_dir), str(tmp_path / "again"), "--to", "official"],
    )
    assert out.exit_code == 0, out.output
    _, again = load_checkpoint(tmp_path / "again", small_spec, dtype=torch.float32, progress=False)
    assert all(torch.equal(again[n], want[n]) for n in want)


def test_make_tiny_is_deterministic_and_loads(tmp_path):
    make_tiny(tmp_path / "a", seed=0)
    out = CliRunner().invoke(app, ["checkpoint", "make-tiny", str(tmp_path / "b")])
    assert out.exit_code == 0, out.output
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert files == ["config.json", *shards, "model.safetensors.index.json"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    tiny = load_spec("tiny")
    spec, loaded = load_checkpoint(tmp_path / "a", tiny, progress=False)  # config.json agrees
    t = next(t for t in checkpoint_tensors(tiny) if t.storage == "fp4")
    want = rounded(t, random_weights(tiny, 0)[t.name], tiny).to(torch.bfloat16)
    assert spec is tiny and torch.equal(loaded[t.name], want)


@pytest.mark.parametrize("dtype, name", [("fp32", "float32"), ("bf16", "bfloat16")])
def test_official_to_hf_to_official_gives_back_the_same_bytes(tmp_path, small_spec, dtype, name):
    """hf's config.json names the dtype the tensors were written in (transformers loads the
    model in it); back to official, the dequantised FP8/FP4 values are quantised again to
    the same formats and the same values bit for bit (every tensor but the MTP block, which
    HF has no place for), and to the release's very bytes except where a block's values
    have two encodings (requantise.py: here 1 FP4 block of 49240; plain re-quantisation
    would differ in thousands); plain values that no scale holds exactly stay plain."""
    tiny = small_spec.model_copy(
        update={"mtp": small_spec.mtp.model_copy(update={"num_layers": 0})}
    )
    weights = {n: w for n, w in random_weights(tiny, seed=2).items() if not n.startswith("mtp.")}
    write_official(tmp_path / "src", tiny, weights)
    runner = CliRunner()
    out = runner.invoke(app, ["checkpoint", "convert", str(tmp_path / "src"), str(tmp_path / "hf"),
                              "--to", "hf", "--dtype", dtype])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == name
    out = runner.invoke(app, ["checkpoint", "convert", str(tmp_path / "hf"),
                              str(tmp_path / "back"), "--to", "official"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "official layout, fp8 weights, fp4 experts;" in out.output
    _, want = load_checkpoint(tmp_path / "src", dtype=torch.float32, progress=False)
    _, got = load_checkpoint(tmp_path / "back", dtype=torch.float32, progress=False)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[n].view(torch.int32), want[n].view(torch.int32)) for n in want
               if want[n].is_floating_point())  # fmt: skip
    differ = total = 0
    with safe_open(tmp_path / "src" / "model.safetensors", "pt") as a:
        with safe_open(tmp_path / "back" / "model.safetensors", "pt") as b:
            assert set(a.keys()) == set(b.keys())
            for key in a.keys():
                x, y = a.get_tensor(key), b.get_tensor(key)
                assert x.dtype == y.dtype and x.shape == y.shape, key  # the same formats
                if key.endswith(".scale"):
                    total += x.numel()
                    differ += (x.view(torch.uint8) != y.view(torch.uint8)).sum().item()
    assert total > 40000 and differ <= total // 10000
    plain = dict(want)  # the release's values
    # x 1.5: exact in bf16 (the plain layout's dtype), not FP8 values of any scale
    plain["layers.0.attn.wo_b.weight"] = plain["layers.0.attn.wo_b.weight"] * 1.5
    write_hf(tmp_path / "hf-plain", tiny, plain, dtype=torch.float32)
    out = runner.invoke(app, ["checkpoint", "convert", str(tmp_path / "hf-plain"),
                              str(tmp_path / "plain"), "--to", "official"])  # fmt: skip
    assert "plain: the weights are not exactly FP8/FP4 values" in out.output
    _, back = load_checkpoint(tmp_path / "plain", dtype=torch.float32, progress=False)
    assert torch.equal(back["layers.0.attn.wo_b.weight"], plain["layers.0.attn.wo_b.weight"])
