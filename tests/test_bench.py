"""`v4c bench` reports what it measured, for every entry point (speed itself is never
asserted: it is measured in benchmarks, not in unit tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_reports_every_figure(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "v4c", "bench", "tiny", "--random-weights", "--prompt-len", "8",
         "--decode", "6", "--json", str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "V4C_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["launches"]["decode"] == figures["launches"]["prefill"] > 50
    assert figures["bytes_per_decode_token"] > 0 and figures["copy_gb_per_s"] > 0
    assert figures["decode_tokens_per_s"] > 0 and figures["prefill_tokens_per_s"] > 0
    assert "launches/step" in out.stdout and "% of the measured copy bandwidth" in out.stdout
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
