"""`v4c bench` reports what it measured, for every entry point (speed itself is never
asserted: it is measured in benchmarks, not in unit tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from v4c.cli import main

pytestmark = pytest.mark.slow


def test_bench_reports_every_figure(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "v4c", "bench", "tiny", "--random-weights", "--prompt-len", "8",
         "--decode", "6", "--repeat", "2", "--json", str(tmp_path / "b.json"), "--threads", "1"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "V4C_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["launches"]["decode"] == figures["launches"]["prefill"] > 50
    assert figures["bytes_per_decode_token"] > 0 and figures["copy_gb_per_s"] > 0
    assert figures["decode_tokens_per_s"] > 0 and figures["prefill_tokens_per_s"] > 0
    assert "launches/step" in out.stdout and "% of the measured copy bandwidth" in out.stdout
    # two timed runs: the medians printed with the spread, every run's figure in the JSON
    runs = figures["runs"]["decode_tokens_per_s"]
    assert figures["repeat"] == 2 and len(runs) == 2
    assert min(runs) <= figures["decode_tokens_per_s"] <= max(runs)
    assert "(median of 2: min " in out.stdout
    assert "decode speed: " in out.stdout and "median of 2 runs of 6 steps" in out.stdout
    assert "bench: run 2/2: prefill 1 x 8 tokens, 6 decode steps" in out.stderr  # progress
    assert "bench: 1 CPU thread (--threads)" in out.stderr  # as run picks and says them
    # tiny has an MTP block: speculation is on by default, with the perfect drafter for K=1..3
    modes = figures["speculation"]
    assert set(modes) == {"off", "mtp", "perfect_k1", "perfect_k2", "perfect_k3"}
    assert modes["off"]["speedup"] == 1.0 and modes["mtp"]["draft_tokens"] == 1
    assert all(modes[f"perfect_k{k}"]["acceptance"] == 1.0 for k in (1, 2, 3))
    assert modes["perfect_k3"]["tokens_per_step"] > 1.0 and "tokens/step" in out.stdout


def test_bench_refuses_a_spec_without_weights(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "v4c", "bench", "tiny"], capture_output=True, text=True,
        env={**os.environ, "V4C_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "add --random-weights" in out.stderr


def _bench(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(["bench", "tiny", "--random-weights", *args])
    return done.value.code, capsys.readouterr().err


def test_bench_checks_its_output_and_needs_before_the_run(tmp_path, capsys, monkeypatch):
    """A --json path that cannot be written, and --compare hf without transformers, are
    refused before anything is built (the run's figures would be lost after it)."""
    code, err = _bench(capsys, "--json", str(tmp_path))
    assert code == 2 and f"--json: {tmp_path}: is a folder; give a file name" in err
    code, err = _bench(capsys, "--json", str(tmp_path / "no" / "b.json"))
    assert code == 2 and "no such folder" in err
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    code, err = _bench(capsys, "--compare", "hf")
    assert code == 2 and "pip install 'transformers>=5.17'" in err
    assert "bench: compiling" not in err and "Traceback" not in err


def test_bench_refuses_a_prompt_the_memory_cannot_hold(capsys, monkeypatch):
    monkeypatch.setattr("v4c.limits.free_memory", lambda device: 300 << 20)  # 300 MiB
    code, err = _bench(capsys, "--prompt-len", "900000", "--speculative", "off")
    assert code == 2 and "Traceback" not in err
    assert "error: --prompt-len 900000 with --decode 32: 900034 tokens do not fit on cpu" in err
    assert "bench: compiling" not in err  # refused before the weights are made
    # the caches of every sequence of the batch: a prompt that fits alone, not 100000 times
    monkeypatch.setattr("v4c.limits.free_memory", lambda device: 8 << 30)
    code, err = _bench(capsys, "--prompt-len", "1000", "--batch", "100000", "--speculative", "off")
    assert code == 2 and "Traceback" not in err
    said = "error: --prompt-len 1000 with --decode 32 and --batch 100000: 1034 tokens do not fit"
    assert said in err
