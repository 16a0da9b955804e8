"""Checkpoints that transformers itself writes: `DeepseekV4ForCausalLM.save_pretrained`, from
each way a user comes to hold the model (built in memory, loaded from official names, loaded
from transformers' module names, held in FP8), in fp32 and bf16, and with
`save_original_format=False` (the module names as they are). Oracles: the files
transformers writes (their names and dtypes, read from the headers), the weights the test
started from, and transformers' greedy `generate`, token for token (fp32 compute).

The spec is tiny with a 512-token vocabulary: hash-gated layers 0-1, score-gated 2-3, and
sliding, CSA, HCA, CSA attention. A 126-token prompt and 6 new tokens cross the 16-token
window, CSA blocks and, while decoding, the first ratio-128 HCA boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tests.runtime.checkpoint_helpers import one_thread, rounded, small_spec_with
from v4c.cli import app
from v4c.errors import CheckpointError
from v4c.ir.semantics.quant import QuantWeight
from v4c.runtime.checkpoint import load_checkpoint, write_hf, write_official
from v4c.runtime.checkpoint.detect import LAYOUTS, detect_layout
from v4c.runtime.checkpoint.read import open_shards
from v4c.runtime.generate import generate
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.runtime.sampler import Sampler
from v4c.session import open_session
from v4c.spec.tensors import checkpoint_tensors

transformers = pytest.importorskip("transformers")
Model = transformers.DeepseekV4ForCausalLM
PROMPT, NEW = 126, 6

# how the saved model came to be (`-native`: saved with save_original_format=False)
# -> (the layout its folder must be in, whether the values are the random weights exactly)
ORIGINS = {
    "memory-fp32": ("hf-saved", True),
    "modules-fp32": ("hf-resaved", True),
    "modules-fp32-native": ("hf", True),
    "official-fp32": ("hf-saved", False),
    "official-bf16": ("hf-saved", False),
    "official-fp8": ("hf-saved-fp8", False),
    "official-fp8-native": ("hf-fp8", False),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def spec():
    return small_spec_with()


@pytest.fixture(scope="module")
def weights(spec):
    return random_weights(spec, seed=5)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, spec, weights) -> dict[str, Path]:
    """Folders transformers loads from: its module names (fp32), official names unquantised
    (bf16, as the plain layout stores), and the official release layout (FP8 + FP4)."""
    root = tmp_path_factory.mktemp("sources")
    write_hf(root / "modules", spec, weights, dtype=torch.float32)
    write_official(root / "plain", small_spec_with(quant={"weights": "bf16"}), weights)
    write_official(root / "official", spec, weights)
    return {name: root / name for name in ("modules", "plain", "official")}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, sources) -> Callable[[str], Path]:
    """origin -> the folder `save_pretrained` wrote for it (made on first use)."""
    root, folders = tmp_path_factory.mktemp("saved"), {}

    def make(origin: str) -> Path:
        if origin not in folders:
            folders[origin] = root / origin
            model = _model(origin.removesuffix("-native"), sources)
            model.save_pretrained(folders[origin], save_original_format="-native" not in origin)
        return folders[origin]

    return make


def _model(origin: str, sources: dict[str, Path]):
    if origin == "memory-fp32":  # built from a config, weights assigned: not from_pretrained
        loaded = Model.from_pretrained(sources["modules"], dtype=torch.float32)
        model = Model(loaded.config)
        model.load_state_dict(loaded.state_dict())
        return model
    if origin == "modules-fp32":
        return Model.from_pretrained(sources["modules"], dtype=torch.float32)
    if origin == "official-fp8":
        return _fp8_model(sources["official"])
    dtype = torch.float32 if origin == "official-fp32" else torch.bfloat16
    return Model.from_pretrained(sources["plain"], dtype=dtype)


def _fp8_model(folder: Path):
    """The release loaded as config.json says, in FP8. transformers keeps a pre-quantised
    model in FP8 only on a GPU (on a CPU it refuses, or dequantises with accelerate), so its
    environment check is lifted: its own load and save code then runs as on a GPU machine."""
    from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FineGrainedFP8HfQuantizer, "validate_environment", lambda *a, **k: None)
        return Model.from_pretrained(folder)


def _stored(folder: Path) -> dict[str, str]:
    with safe_open(folder / "model.safetensors", "pt") as f:
        return {name: f.get_slice(name).get_dtype() for name in f.keys()}


@pytest.mark.parametrize("origin", ORIGINS)
def test_saved_folder_is_detected_and_loads(origin, saved, sources, spec, weights):
    folder, (layout, exact) = saved(origin), ORIGINS[origin]
    units = LAYOUTS[layout](spec)
    stored = _stored(folder)
    assert stored.keys() == {s.name for u in units for s in u.stored}  # transformers' names
    assert all(stored[s.name] in s.dtypes for u in units for s in u.stored)
    with ExitStack() as stack:
        assert detect_layout(open_shards(folder, stack), spec) == layout
    got_spec, got = load_checkpoint(folder, dtype=torch.float32, progress=False)
    plain = small_spec_with(quant={"weights": "bf16"})  # what the other config.jsons say
    assert got_spec.quant == (spec.quant if "fp8" in origin else plain.quant)
    if "fp8" in origin:  # the same FP8/FP4 bytes as the release it was loaded from
        want = load_checkpoint(sources["official"], spec, dtype=torch.float32, progress=False)[1]
    else:
        want = {
            t.name: weights[t.name] if exact else rounded(t, weights[t.name], plain)
            for t in checkpoint_tensors(plain)
        }
    assert list(got) == [t.name for t in checkpoint_tensors(spec) if not t.name.startswith("mtp.")]
    for name, x in got.items():
        assert x.dtype == want[name].dtype and torch.equal(x, want[name]), name


@pytest.mark.parametrize("origin", ["official-fp8", "official-fp8-native"])
def test_fp8_folder_keeps_weights_quantised(origin, saved, sources, spec):
    """Kept: the stored bytes, as the release's; w3 is not asked for: it is dequantised, even
    where it shares one stored tensor with w1 (hf-fp8's merged gate_up_proj)."""
    experts = "layers.3.ffn.experts.{e}."
    names = frozenset({"layers.0.attn.wq_a.weight", f"{experts}w1.weight", f"{experts}w2.weight"})
    _, got = load_checkpoint(saved(origin), keep_quantised=names, progress=False)
    _, want = load_checkpoint(sources["official"], spec, keep_quantised=names, progress=False)
    for name in names:
        assert isinstance(got[name], QuantWeight) and got[name].format == want[name].format
        assert torch.equal(got[name].data.view(torch.uint8), want[name].data.view(torch.uint8))
        assert torch.equal(got[name].scale.view(torch.uint8), want[name].scale.view(torch.uint8))
    w3 = f"{experts}w3.weight"
    assert not isinstance(got[w3], QuantWeight) and torch.equal(got[w3], want[w3])


@pytest.mark.parametrize("origin", ["memory-fp32", "official-bf16"])
def test_greedy_continuation_equals_transformers_generate(origin, saved, spec):
    folder = saved(origin)
    ids = torch.randint(2, spec.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    hf = Model.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    theirs = out[0, PROMPT:].tolist()
    session = open_session(
        folder, dtype=torch.float32, numerics="plain", backend="torch", max_seq=256,
        max_tokens=PROMPT, progress=False, log=lambda _: None,
    )  # fmt: skip
    ours = generate(
        session.engine, [ids[0].tolist()], Sampler(), max_new_tokens=NEW, stop_ids=set()
    )
    assert len(theirs) == NEW and ours.tokens == [theirs]


def test_convert_cli_reads_a_saved_folder(saved, tmp_path):
    folder = saved("official-bf16")
    out = CliRunner().invoke(
        app, ["checkpoint", "convert", str(folder), str(tmp_path / "hf"), "--to", "hf"]
    )
    assert out.exit_code == 0, out.output
    _, want = load_checkpoint(folder, progress=False)
    _, got = load_checkpoint(tmp_path / "hf", progress=False)
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)


def test_a_folder_of_another_model_names_the_layouts_tried(saved, tmp_path, spec):
    """Another model's names beside two that V4 layouts also use: nothing is taken for a
    V4 layout missing 120 tensors."""
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "config.json").write_bytes((saved("memory-fp32") / "config.json").read_bytes())
    save_file(
        {
            "lm_head.weight": torch.zeros(512, 256),
            "model.norm.weight": torch.zeros(256),
            "model.layers.0.self_attn.q_proj.weight": torch.zeros(4),
            "model.layers.0.mlp.up_proj.weight": torch.zeros(4),
        },
        folder / "model.safetensors",
    )
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder, progress=False)
    hf = LAYOUTS["hf"](spec)
    assert str(err.value) == (
        f"{folder / 'model.safetensors'}: the tensors fit no checkpoint layout of other: tried "
        "plain, official, hf, hf-fp8, hf-saved, hf-saved-fp8, hf-resaved; the closest, hf, has "
        f"2 of the folder's 4 tensors and of its own {sum(len(u.stored) for u in hf)}; names in "
        "no layout: model.layers.0.mlp.up_proj.weight, model.layers.0.self_attn.q_proj.weight"
    )


def test_a_saved_folder_missing_a_tensor_names_it_as_saved(saved, tmp_path):
    """One tensor short, the folder still fits hf-saved best: the problem names the tensor
    as transformers wrote it (the attention's kv_norm is `attn.norm` there)."""
    folder = tmp_path / "short"
    folder.mkdir()
    source = saved("memory-fp32")
    (folder / "config.json").write_bytes((source / "config.json").read_bytes())
    tensors = load_file(source / "model.safetensors")
    tensors.pop("model.layers.2.attn.norm.weight")
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder, progress=False)
    assert str(err.value) == (
        f"{folder / 'model.safetensors'}: model.layers.2.attn.norm.weight: missing tensor"
    )
