"""Every way a checkpoint folder can be wrong is a CheckpointError whose message names the
file and the tensor; each test breaks one thing in a copy of a good folder and expects the
exact message, worked out from what was broken."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.runtime.checkpoint_helpers import one_thread, small_spec_with
from v4c.errors import CheckpointError
from v4c.runtime.checkpoint import load_checkpoint, write_hf, write_official
from v4c.runtime.checkpoint.random_weights import random_weights

FILE = "model.safetensors"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def spec():
    return small_spec_with()


@pytest.fixture(scope="module")
def weights(spec):
    return random_weights(spec, seed=2)


@pytest.fixture(scope="module")
def good(tmp_path_factory, spec, weights):
    folder = tmp_path_factory.mktemp("good")
    write_official(folder, spec, weights)
    return folder


def broken(good, tmp_path, change, file=FILE):
    """A copy of `good` with `change(tensors)` applied to one of its files."""
    folder = tmp_path / "ck"
    shutil.copytree(good, folder)
    tensors = load_file(folder / file)
    change(tensors)
    save_file(tensors, folder / file)
    return folder


def error_of(folder, spec=None) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder, spec, progress=False)
    return str(err.value)


def test_missing_tensor(good, tmp_path):
    folder = broken(good, tmp_path, lambda t: t.pop("layers.1.attn.attn_sink"))
    assert error_of(folder) == f"{folder / FILE}: layers.1.attn.attn_sink: missing tensor"


def test_unexpected_tensor(good, tmp_path):
    folder = broken(good, tmp_path, lambda t: t.update({"layers.0.attn.extra": torch.zeros(3)}))
    assert error_of(folder) == f"{folder / FILE}: layers.0.attn.extra: unexpected tensor"


def test_wrong_shape(good, tmp_path):
    folder = broken(
        good, tmp_path, lambda t: t.update({"norm.weight": torch.ones(257, dtype=torch.bfloat16)})
    )
    assert error_of(folder) == f"{folder / FILE}: norm.weight: shape [257], expected [256]"


def test_wrong_dtypes_all_reported(good, tmp_path):
    def change(t):
        t["layers.0.ffn.gate.tid2eid"] = t["layers.0.ffn.gate.tid2eid"].int()
        t["layers.0.attn.wq_a.scale"] = t["layers.0.attn.wq_a.scale"].float()
        t["head.weight"] = t["head.weight"].to(torch.int16)

    folder = broken(good, tmp_path, change)
    path = folder / FILE
    assert error_of(folder).splitlines() == [
        f"{path}: head.weight: dtype I16, expected one of BF16, F32, F16",
        f"{path}: layers.0.attn.wq_a.scale: dtype F32, expected F8_E8M0",
        f"{path}: layers.0.ffn.gate.tid2eid: dtype I32, expected I64",
    ]


def test_missing_scale(good, tmp_path):
    w = "layers.2.ffn.experts.5.w2"
    folder = broken(good, tmp_path, lambda t: t.pop(f"{w}.scale"))
    assert error_of(folder) == f"{folder / FILE}: {w}.weight: missing its scale {w}.scale"


def test_extra_scale(good, tmp_path):
    scale = torch.tensor([127], dtype=torch.uint8).view(torch.float8_e8m0fnu)
    norm = "layers.0.attn.kv_norm"
    folder = broken(good, tmp_path, lambda t: t.update({f"{norm}.scale": scale}))
    assert error_of(folder) == (
        f"{folder / FILE}: {norm}.scale: extra scale: {norm}.weight is stored unquantised"
    )


def test_hf_layout_errors_name_the_hf_tensor(tmp_path, spec, weights):
    write_hf(tmp_path, spec, weights)
    tensors = load_file(tmp_path / FILE)
    down = "model.layers.0.mlp.experts.down_proj"  # [E, D, I]
    tensors[down] = torch.zeros(8, 256, 63)
    save_file(tensors, tmp_path / FILE)
    assert (
        error_of(tmp_path)
        == f"{tmp_path / FILE}: {down}: shape [8, 256, 63], expected [8, 256, 64]"
    )


@pytest.mark.parametrize("cut", [100, 10**9])
def test_truncated_or_corrupt_file(good, tmp_path, cut):
    folder = tmp_path / "ck"
    shutil.copytree(good, folder)
    data = (folder / FILE).read_bytes()
    (folder / FILE).write_bytes(data[:-cut] if cut < len(data) else b"not a safetensors file")
    message = error_of(folder)
    assert message.startswith(
        f"{folder / FILE}: not a readable safetensors file (corrupt or truncated): "
    )


def test_index_names_a_missing_shard(tmp_path, spec, weights):
    write_official(tmp_path, spec, weights, shards=2)
    index = tmp_path / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"]
    shard = "model-00002-of-00002.safetensors"
    (tmp_path / shard).unlink()
    first = sorted(n for n, f in weight_map.items() if f == shard)[0]
    assert error_of(tmp_path) == f"{index}: {first}: in shard {shard}, which does not exist"


def test_index_lists_a_tensor_its_shard_lacks(tmp_path, spec, weights):
    write_official(tmp_path, spec, weights, shards=2)
    shard = tmp_path / "model-00001-of-00002.safetensors"
    tensors = load_file(shard)
    tensors.pop("embed.weight")
    save_file(tensors, shard)
    index = tmp_path / "model.safetensors.index.json"
    assert error_of(tmp_path) == f"{shard}: embed.weight: listed in {index} but not in the file"


def test_config_contradicting_the_spec(good, spec):
    other = small_spec_with(moe=spec.moe.model_dump() | {"routed_scaling_factor": 2.5})
    config = good / "config.json"
    assert (
        error_of(good, other)
        == f"{config}: routed_scaling_factor: 1.5 in the file, 2.5 in the spec"
    )


def test_config_missing_or_unreadable(good, tmp_path, spec):
    folder = tmp_path / "ck"
    shutil.copytree(good, folder)
    (folder / "config.json").unlink()
    assert (
        error_of(folder)
        == f"{folder / 'config.json'}: missing; a checkpoint folder needs one (or pass a spec)"
    )
    assert load_checkpoint(folder, spec, progress=False)[0] is spec
    (folder / "config.json").write_text("{not json")
    assert error_of(folder).startswith(f"{folder / 'config.json'}: cannot read JSON: ")


def test_no_folder_no_files(good, tmp_path):
    assert error_of(tmp_path / "nowhere") == f"{tmp_path / 'nowhere'}: no such checkpoint folder"
    shutil.copy(good / "config.json", tmp_path)
    assert error_of(tmp_path) == f"{tmp_path}: no *.safetensors files"


def test_writer_rejects_bad_weights_and_stale_shards(tmp_path, spec, weights):
    bad = dict(weights) | {"norm.weight": torch.ones(3), "extra": torch.ones(1)}
    bad.pop("layers.1.attn.attn_sink")
    bad["layers.0.ffn.gate.tid2eid"] = bad["layers.0.ffn.gate.tid2eid"].float()
    with pytest.raises(CheckpointError) as err:
        write_official(tmp_path / "a", spec, bad)
    assert str(err.value).splitlines() == [
        "weights: norm.weight: shape [3], expected [256]",
        "weights: layers.0.ffn.gate.tid2eid: dtype torch.float32, expected an integer dtype",
        "weights: layers.1.attn.attn_sink: missing tensor",
        "weights: extra: unexpected tensor (not in tiny-512)",
    ]
    assert not (tmp_path / "a").exists()  # nothing written
    write_official(tmp_path / "b", spec, weights, shards=2)
    with pytest.raises(CheckpointError) as err:
        write_official(tmp_path / "b", spec, weights)
    shards = "model-00001-of-00002.safetensors, model-00002-of-00002.safetensors"
    assert str(err.value) == (
        f"{tmp_path / 'b'}: holds {shards}, model.safetensors.index.json from another checkpoint;"
        " write into an empty folder"
    )


def test_cli_reports_without_traceback(tmp_path):
    src = tmp_path / "nowhere"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "v4c",
            "checkpoint",
            "convert",
            str(src),
            str(tmp_path / "dst"),
            "--to",
            "hf",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr == f"error: {src}: no such checkpoint folder\n"
