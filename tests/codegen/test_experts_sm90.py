"""The expert kernels of a Flash decode step (batch 1) built for sm_90 ahead of time by
bench/experts_sm90.py (in a subprocess without TRITON_INTERPRET): the routed FP4 weights
stream in 16-byte copies and their scales in copies of 2 to 4 bytes, with no one-byte
loads, every kernel covers the 132 SMs, and the dots are bf16 tensor-core MMAs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parents[2] / "bench" / "experts_sm90.py"
BF16_MMA = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"


def test_flash_decode_experts_on_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tokens", "1", "--json", str(tmp_path / "r.json")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    kernels = {k: v for k, v in report.items() if k != "layer"}
    assert set(kernels) == {f"{t}.{k}" for t in ("grouped_swiglu", "swiglu")
                            for k in ("gate_up_kernel", "down_kernel")}  # fmt: skip
    for name, facts in kernels.items():
        assert facts["ctas"] >= 132, name
        assert facts["mma"] == [BF16_MMA], name
        assert max(facts["cp_async_bytes"]) == 16, name  # the weight tiles' copies
        if name.startswith("grouped"):  # FP4: a row's 4 scales of a step together, or 2
            assert min(facts["cp_async_bytes"]) >= 4, name
            assert not any(".b8" in k or ".u8" in k for k in facts["ld_global"]), name
