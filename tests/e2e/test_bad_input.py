"""Bad input through the real `v4c` command, in a subprocess, as a user meets it.

Every case must exit non-zero (2 for a user error), print a clear message that names the
thing at fault, never a traceback, and leave no half-written files. The oracle is the
statement of the problem itself: each case checks that its message names the file, field,
option or tensor that is wrong and the number or flag to use instead.

One tiny checkpoint is made per session (in a temporary cache, never ~/.cache) and shared;
checkpoint variants link its big first shard and rewrite only the small second one. Cases
that fail before torch is imported run one subprocess each; those that need torch run in
one subprocess together (`cli_batch`: the same entry point, torch imported once), except
the first-run race, which needs two processes of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.e2e.conftest import cli_env

SHARD2 = "model-00002-of-00002.safetensors"


@pytest.fixture
def env(cache, tmp_path):
    return cli_env(cache, tmp_path / "home")


def v4c(env, *args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "v4c", *map(str, args)],
        capture_output=True, text=True, env=env, input=stdin, timeout=120,
    )  # fmt: skip


def fails(out, *needles: str, code: int = 2) -> str:
    """The run (a CompletedProcess or a batch result) failed with `code`, without a
    traceback, and its stderr names every needle."""
    err, stdout = out.stderr, out.stdout
    returncode = out.returncode
    assert returncode == code, (returncode, err)
    assert "Traceback" not in err and "Traceback" not in stdout, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def variant(tiny: Path, folder: Path, change) -> Path:
    """A copy of the tiny checkpoint whose second shard's tensors went through `change`
    (the first shard is a link: it is 130 MB and unchanged)."""
    folder.mkdir()
    for file in tiny.iterdir():
        if file.name != SHARD2:
            os.symlink(file, folder / file.name)
    tensors = load_file(tiny / SHARD2)
    change(tensors)
    save_file(tensors, folder / SHARD2, metadata={"format": "pt"})
    return folder


def run_args(checkpoint: Path, *extra) -> list:
    return ["run", "--prompt", "Hi", "--checkpoint", checkpoint, "--max-new-tokens", 1, *extra]


# -- spec files --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, needles", [
    ("name: [unclosed\n", ["my.yaml:2: YAML syntax error"]),
    ("extends: tiny\nbogus_field: 1\n", [":2: bogus_field: unknown field"]),
    ("extends: tiny\nhidden_size: wide\n", [":2: hidden_size:", "'wide'"]),
    ("extends: nowhere.yaml\n", [":1: extends: file 'nowhere.yaml' not found"]),
    ("", ["expected a mapping of spec fields"]),
    ("extends: tiny\nhidden_size: 0\nattention: {num_heads: -1}\nmoe: {top_k: 80}\n",
     [":2: hidden_size:", ":3: attention.num_heads:", ":4: moe.top_k: must be <= moe.num_experts"]),
])  # fmt: skip
def test_bad_spec_files(env, tmp_path, text, needles):
    (tmp_path / "my.yaml").write_text(text)
    fails(v4c(env, "spec", "validate", tmp_path / "my.yaml"), *needles)


def test_an_error_in_an_extending_file_is_blamed_on_its_line(env, tmp_path):
    (tmp_path / "base.yaml").write_text("extends: tiny\nname: base\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\n\nmoe:\n  top_k: 80\n")
    err = fails(v4c(env, "spec", "validate", tmp_path / "child.yaml"))
    assert f"{tmp_path / 'child.yaml'}:5: moe.top_k:" in err


def test_spec_import_names_the_file_and_the_missing_key(env, tmp_path):
    config = json.loads(v4c(env, "spec", "export", "tiny").stdout)
    del config["num_hidden_layers"]
    (tmp_path / "foo.json").write_text(json.dumps(config))
    err = fails(v4c(env, "spec", "import", tmp_path / "foo.json", "-o", tmp_path / "o.yaml"))
    assert (
        err.strip() == f"error: {tmp_path / 'foo.json'}: num_hidden_layers: required key is missing"
    )
    assert not (tmp_path / "o.yaml").exists()
    (tmp_path / "bad.json").write_text("{not json")
    fails(v4c(env, "spec", "import", tmp_path / "bad.json", "-o", tmp_path / "o.yaml"),
          "bad.json: cannot read JSON")  # fmt: skip


def test_unwritable_output_folders(env, tmp_path):
    (tmp_path / "file").write_text("")
    fails(v4c(env, "spec", "export", "tiny", "-o", tmp_path / "file" / "c.json"),
          "file/c.json: cannot write")  # fmt: skip
    fails(v4c(env, "checkpoint", "make-tiny", tmp_path / "file" / "ck"), "file/ck: cannot create")


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("option, value, needle", [
    ("--top-p", "0", "must be a number in (0, 1], got 0.0"),
    ("--top-p", "1.5", "must be a number in (0, 1]"),
    ("--top-p", "nan", "must be a number in (0, 1]"),
    ("--temperature", "-1", "must be a number in [0, ∞)"),
    ("--temperature", "inf", "must be a number in [0, ∞)"),
    ("--top-k", "-1", "--top-k"),
    ("--seed", "-1", "--seed"),
    ("--max-new-tokens", "0", "--max-new-tokens"),
    ("--max-seq", "0", "--max-seq"),
    ("--threads", "0", "--threads"),
    ("--backend", "cuda", "--backend: expected auto, torch or triton, got 'cuda'"),
    ("--device", "tpu", "--device: 'tpu' is not available"),
    ("--numerics", "fp8", "--numerics: expected official or plain, got 'fp8'"),
])  # fmt: skip
def test_bad_option_values(env, option, value, needle):
    fails(v4c(env, "run", "--prompt", "Hi", option, value), needle)


@pytest.mark.parametrize("option, value", [("--top-p", "0"), ("--temperature", "nan")])
def test_bad_option_values_in_chat(env, option, value):
    fails(v4c(env, "chat", option, value), "must be a number in")


def test_missing_checkpoint_folder(env, tmp_path):
    fails(v4c(env, *run_args(tmp_path / "nothing")), "nothing: no such checkpoint folder")


# -- what needs torch: one subprocess for all --------------------------------------------------


class Result:
    def __init__(self, data: dict):
        self.returncode, self.stdout, self.stderr = data["code"], data["stdout"], data["stderr"]


def _retype(t):
    t["layers.0.attn.attn_sink"] = t["layers.0.attn.attn_sink"].to(torch.int32)


BAD_TENSORS = {
    "missing": (lambda t: t.pop("layers.0.attn.attn_sink"), ["layers.0.attn.attn_sink"]),
    "extra": (lambda t: t.update({"layers.0.attn.extra": torch.zeros(3)}),
              [SHARD2, "layers.0.attn.extra: not listed for this file"]),
    "shape": (lambda t: t.update({"layers.0.attn_norm.weight": torch.ones(7).bfloat16()}),
              [SHARD2, "layers.0.attn_norm.weight: shape [7]"]),
    "dtype": (_retype, [SHARD2, "layers.0.attn.attn_sink: dtype I32, expected one of F32"]),
}  # fmt: skip


@pytest.fixture(scope="session")
def batch(cache, tiny, tmp_path_factory) -> dict[str, Result]:
    """Every torch-needing case, run by `cli_batch` in one subprocess."""
    work = tmp_path_factory.mktemp("batch")
    env = cli_env(cache, work / "home")
    cases = {
        "triton_no_gpu": run_args(tiny, "--backend", "triton", "--numerics", "plain"),
        "no_fit": run_args(tiny, "--max-seq", 4, "--max-new-tokens", 10),
        "over_model": run_args(tiny, "--max-seq", 2**21),
        "at_limit": run_args(tiny, "--max-seq", 7, "--max-new-tokens", 50, "--temperature", 0),
        "one_token": run_args(tiny),
        "contradicts": run_args(tiny, "--spec", "flash"),
        "hf_make": ["checkpoint", "convert", tiny, work / "hf", "--to", "hf"],
        "hf_refuse": ["checkpoint", "convert", work / "hf", work / "off", "--to", "official"],
        "hf_ok": ["checkpoint", "convert", work / "hf", work / "off2", "--to", "official",
                  "--without-mtp"],
    }  # fmt: skip
    for name, (change, _) in BAD_TENSORS.items():
        cases[f"tensor_{name}"] = run_args(variant(tiny, work / name, change))
    for damage in ("truncate", "garbage"):
        folder = variant(tiny, work / damage, lambda t: None)
        data = (folder / SHARD2).read_bytes()
        (folder / SHARD2).write_bytes(data[:1000] if damage == "truncate" else b"\x07" * 64)
        cases[f"corrupt_{damage}"] = run_args(folder)
    broken = variant(tiny, work / "broken_config", lambda t: None)
    (broken / "config.json").unlink()
    (broken / "config.json").write_text("{")
    cases["broken_config"] = run_args(broken)
    (work / "file").write_text("")
    cases["compile_unwritable"] = ["compile", "tiny", "-o", work / "file" / "out"]
    listed = [{"name": n, "argv": list(map(str, a)), "env": {}} for n, a in cases.items()]
    listed.append({"name": "unwritable_cache", "argv": ["run", "--prompt", "Hi"],
                   "env": {"V4C_CACHE_DIR": str(work / "file" / "cache")}})  # fmt: skip
    (work / "cases.json").write_text(json.dumps(listed))
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "tests.e2e.cli_batch", work / "cases.json", work / "out.json"],
        env=env, cwd=root, check=True, timeout=300,
    )  # fmt: skip
    results = json.loads((work / "out.json").read_text())
    return {name: Result(r) for name, r in results.items()} | {"work": work}


def test_triton_without_a_gpu_says_what_to_do(batch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    err = fails(batch["triton_no_gpu"])
    assert err.count("\n") == 1 and "use --backend torch" in err


def test_a_prompt_that_does_not_fit_is_refused_before_generating(batch):
    out = batch["no_fit"]
    fails(out, "the prompt does not fit: 5 prompt tokens > max_seq 4", "--max-seq 14")
    assert out.stdout == ""
    fails(batch["over_model"], "has 1048576 positions, got 2097152")


def test_generation_stops_cleanly_at_max_seq(batch):
    out = batch["at_limit"]
    assert out.returncode == 0, out.stderr
    assert "max_seq 7 tokens (--max-seq" in out.stderr
    assert "[5 prompt tokens, 3 new (max_seq);" in out.stderr  # 5 + 3 - 1 fed = 7
    one = batch["one_token"]
    assert one.returncode == 0, one.stderr
    assert "1 new (length)" in one.stderr and "no decode step" in one.stderr
    assert "reading model-00001-of-00002.safetensors (1/2)\n" in one.stderr  # no bar off a tty
    assert "━" not in one.stderr
    for said in (
        "device cpu (",
        "dtype float32 (",
        "1 thread",
        "backend torch (",
        "numerics official (the checkpoint is in the official",
        "max_seq 8192 tokens (",
    ):
        assert said in one.stderr, (said, one.stderr)  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_TENSORS))
def test_bad_tensors(batch, name):
    fails(batch[f"tensor_{name}"], *BAD_TENSORS[name][1])


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_shard(batch, damage):
    fails(batch[f"corrupt_{damage}"], f"{SHARD2}: not a readable safetensors file")


def test_broken_or_contradicting_config(batch):
    fails(batch["broken_config"], "config.json: cannot read JSON")
    fails(batch["contradicts"], "config.json: hidden_size:")


def test_hf_to_official_needs_without_mtp(batch):
    work = batch["work"]
    assert batch["hf_make"].returncode == 0, batch["hf_make"].stderr
    assert "no MTP block" in batch["hf_make"].stdout
    fails(batch["hf_refuse"], "has no MTP block", "--without-mtp")
    assert not (work / "off").exists()  # refused before anything was written
    out = batch["hf_ok"]
    assert out.returncode == 0, out.stderr
    written = len(load_file(work / "off2" / "model.safetensors"))
    assert f"; {written} tensors)" in out.stdout  # what the file holds
    assert json.loads((work / "off2" / "config.json").read_text())["num_nextn_predict_layers"] == 0


def test_unwritable_compile_folder(batch):
    fails(batch["compile_unwritable"], "file/out: cannot write the output folder")


def test_unwritable_cache(batch):
    err = fails(batch["unwritable_cache"], "cannot write the tiny default checkpoint")
    assert "set V4C_CACHE_DIR to a writable folder" in err


# -- the cache ---------------------------------------------------------------------------------


def test_two_first_runs_on_a_damaged_cache_remake_it_once(env, tiny, tmp_path):
    """A truncated shard and a folder left by a killed run; two runs start at once."""
    root = tmp_path / "cache"
    folder = root / "checkpoints" / tiny.name
    shutil.copytree(tiny, folder)
    (root / "checkpoints" / ".tiny-killed").mkdir()
    with open(folder / SHARD2, "r+b") as f:
        f.truncate(1000)
    env = {**env, "V4C_CACHE_DIR": str(root)}
    cmd = [sys.executable, "-m", "v4c", "run", "--prompt", "Hi", "--max-new-tokens", "1"]
    runs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], errs
    remade = [e for e in errs if "remaking it" in e]
    assert len(remade) == 1 and f"{SHARD2} is truncated" in remade[0], errs
    assert not list((root / "checkpoints").glob(".tiny-*"))
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert set(modes.values()) == {0o644}, modes  # weights as readable as config.json


def test_cache_info_and_clear(env, tmp_path):
    root = tmp_path / "cache"
    (root / "checkpoints" / "x").mkdir(parents=True)
    (root / "checkpoints" / "x" / "w").write_bytes(b"\0" * 2000)
    (root / "mine.txt").write_text("a user's file")
    env = {**env, "V4C_CACHE_DIR": str(root)}
    info = v4c(env, "cache", "info")
    assert info.returncode == 0 and f"{root}  (from $V4C_CACHE_DIR" in info.stdout
    assert "2.0 kB  checkpoints/" in info.stdout
    cleared = v4c(env, "cache", "clear")
    assert cleared.returncode == 0 and "removed 1 folders (2.0 kB)" in cleared.stdout
    assert sorted(p.name for p in root.iterdir()) == ["mine.txt"]  # only what v4c made
    assert v4c(env, "--version").stdout.startswith("v4c ")
