"""`bench/gpu_check.sh` on a CPU: `bench/kernels.py` on the tiny spec (its bytes and FLOPs
against figures worked out by hand from the spec), the script's dry run (every stage
recorded in order, a failing stage recorded and the rest still run, the report written),
and the report assembled from real figure files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from v4c.spec import load_spec

STAGES = ["env", "pytest-gpu", "kernels", "estimate", "bench-as-stored", "bench-bf16",
          "bench-speculative"]  # fmt: skip


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernels_json(tmp_path_factory):
    """kernels.py on the tiny spec: fp32 on the CPU, torch backend, 8-token prefill."""
    path = tmp_path_factory.mktemp("kernels") / "kernels.json"
    _bench_module("kernels").main(
        ["--spec", "tiny", "--device", "cpu", "--weights", "bf16", "--prompt-len", "8",
         "--repeat", "1", "--json", str(path)]
    )  # fmt: skip
    return path


def _launch(figures: dict, entry: str, node: str) -> dict:
    return next(r for r in figures["entries"][entry]["launches"] if r["node"] == node)


def test_kernels_reports_every_call_with_its_bytes_and_flops(kernels_json):
    figures = json.loads(kernels_json.read_text())
    spec = load_spec("tiny")
    d, top_k, inter = spec.hidden_size, spec.moe.top_k, spec.moe.intermediate_size
    fp32, i64 = 4, 8
    assert figures["device"] == "cpu" and figures["backend"] == "torch"
    for entry, tokens in (("decode", 1), ("prefill", 8)):
        timed = figures["entries"][entry]
        assert timed["tokens"] == tokens
        assert all(r["kind"] != "view" and r["seconds"] > 0 for r in timed["launches"])
        # the embedding: the ids, one gathered row per token, the rows written
        embed = _launch(figures, entry, "embed")
        assert embed["bytes"] == tokens * (i64 + 2 * d * fp32) and embed["flops"] == 0
        # wkv: x [T, D] @ W [128, D]^T, the whole weight read once
        wkv = _launch(figures, entry, "L00.attn.wkv")
        out = spec.attention.head_dim
        assert wkv["kind"] == "kernel" and wkv["flops"] == 2 * tokens * out * d
        assert wkv["bytes"] == (out * d + tokens * (d + out)) * fp32
        # the routed experts (gate, up, down fused): top_k experts per token, all 8 at most
        experts = _launch(figures, entry, "L00.ffn.experts")
        assert experts["flops"] == 2 * tokens * top_k * 3 * inter * d
        # the summary per kernel adds up the calls
        groups = {g["kernel"]: g for g in timed["by_kernel"]}
        assert sum(g["launches"] for g in groups.values()) == len(timed["launches"])
        mm = groups["linear"]
        calls = [r for r in timed["launches"] if r["kernel"] == "linear"]
        assert mm["bytes"] == sum(r["bytes"] for r in calls)
        assert mm["gb_per_s"] == pytest.approx(mm["bytes"] / mm["seconds"] / 1e9)
        assert mm["bandwidth_fraction"] == pytest.approx(mm["gb_per_s"] / figures["copy_gb_per_s"])
        assert mm["peak_fraction"] == pytest.approx(mm["tflops"] / 989.0)
    # each decode GEMM beside torch.mm on its weight (bf16 weights: no _scaled_mm baseline);
    # the prefill's are not timed twice
    for entry, timed in figures["entries"].items():
        gemms = [r for r in timed["launches"] if r["op"] in ("linear", "grouped_linear")]
        beside = [r for r in timed["launches"] if "torch_mm_seconds" in r]
        assert gemms and beside == (gemms if entry == "decode" else [])
        assert all(r["torch_mm_seconds"] > 0 and "scaled_mm_seconds" not in r for r in beside)
    # the decode step's experts read top_k of the 8 stacked experts (plus a few activations),
    # the 8-token prefill's all 8
    decode, prefill = (_launch(figures, e, "L00.ffn.experts")["bytes"] for e in figures["entries"])
    per_expert = 3 * inter * d * fp32
    assert top_k * per_expert <= decode < top_k * per_expert + 4 * d * fp32
    assert spec.moe.num_experts * per_expert <= prefill


def _dry_run(out, fail: str) -> subprocess.CompletedProcess:
    # this interpreter, reading the sources through the script's tree of links (as on a
    # machine without the .venv)
    env = {
        **os.environ,
        "OUT": str(out),
        "GPU_CHECK_FAIL": fail,
        "GPU_CHECK_PYTHON": sys.executable,
    }
    return subprocess.run(
        [str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_dry_run_records_every_stage_and_the_failing_one(tmp_path):
    done = _dry_run(tmp_path, fail="kernels")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["name"] for s in report["stages"]] == STAGES
    status = {s["name"]: s["status"] for s in report["stages"]}
    assert status["env"] == "ok" and report["env"]["python"] == sys.version.split()[0]
    assert "v4c-gpu-check" in report["env"]["v4c"]  # the tree, not an installed v4c
    assert status["kernels"] == "failed (exit 1)"
    assert status["pytest-gpu"] == status["bench-bf16"] == "dry run (not run)"
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| kernels | failed (exit 1) |" in md and "No kernel figures" in md


def test_report_gathers_the_figures(tmp_path, kernels_json):
    from v4c.bench import BenchResult, write_json

    report_module = _bench_module("gpu_check_report")
    (tmp_path / "kernels.json").write_text(kernels_json.read_text())
    result = BenchResult("tiny", "cpu", "torch", "fp32", "bf16", 1, 8, 2)
    result.prefill_tokens_per_s, result.decode_ms_per_token = 300.0, 4.0
    result.hf = {"prefill_tokens_per_s": 100.0, "decode_ms_per_token": 10.0}
    write_json(result, tmp_path / "bench_as_stored.json")
    drafted = BenchResult("tiny", "cpu", "torch", "fp32", "bf16", 1, 8, 2)
    drafted.prefill_tokens_per_s, drafted.decode_ms_per_token = 300.0, 4.0
    drafted.speculation = {
        "off": {"tokens_per_s": 50.0, "draft_tokens": 0, "speedup": 1.0},
        "perfect_k2": {"tokens_per_s": 100.0, "draft_tokens": 2, "speedup": 2.0,
                       "acceptance": 1.0, "tokens_per_step": 2.9},
    }  # fmt: skip
    write_json(drafted, tmp_path / "bench_speculative.json")
    (tmp_path / "stages.tsv").write_text("bench-bf16\t124\t60\tpython -m v4c bench\n")
    (tmp_path / "pytest_gpu.log").write_text(
        "tests/x.py ss\n===== 3 passed, 2 skipped, 900 deselected in 41.20s =====\n"
    )
    report_module.main([str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["pytest_gpu"] == "3 passed, 2 skipped, 900 deselected in 41.20s"
    assert report["stages"][0]["status"] == "timed out"
    assert report["kernels"] == json.loads(kernels_json.read_text())
    want = {t["target"]: (t["measured"], t["met"]) for t in report["targets"]}
    assert want["decode, x transformers eager (as stored)"] == (2.5, False)  # 10 ms / 4 ms
    assert want["prefill, x transformers eager (as stored)"] == (3.0, False)  # 300 / 100 tok/s
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| bench-speculative | perfect_k2 | 2 | 100.0 | 2.00 | 100 % | 2.90 |" in md
    assert "| bench-speculative | off | 0 | 50.0 | 1.00 | – | 1 |" in md
    assert "| 300 | 4.000 |" in md and "| 3.00 | 2.50 |" in md  # v4c / transformers
    for entry in report["kernels"]["entries"].values():
        for g in entry["by_kernel"]:
            assert f"| {g['kernel']} | {g['launches']} |" in md


def test_estimate_joins_measured_calls_with_the_lens(tmp_path, kernels_json):
    """bench/estimate.py's join: the lens's rows of a node (its Triton kernels) summed and
    set beside the measured call, per launch and per kernel; the report prints the table."""
    figures = json.loads(kernels_json.read_text())
    decode = figures["entries"]["decode"]["launches"]
    embed, wkv = decode[0], next(r for r in decode if r["node"] == "L00.attn.wkv")
    lens = {"launches": [
        {"entry": "decode", "bucket": "B=1,T=1", "node": "embed", "est_us": 3.0, "bound": "x"},
        {"entry": "decode", "bucket": "B=1,T=1", "node": "embed", "est_us": 1.0, "bound": "x"},
        {"entry": "decode", "bucket": "B=1,T=1", "node": "L00.attn.wkv", "est_us": 5.0,
         "bound": "memory"},
        {"entry": "prefill", "bucket": "B=1,T=1", "node": "embed", "est_us": 99.0, "bound": "x"},
    ]}  # fmt: skip
    joined = _bench_module("estimate").joined(figures, lens)
    rows = {r["node"]: r for r in joined["decode"]["launches"]}
    assert set(rows) == {"embed", "L00.attn.wkv"} and joined["prefill"]["launches"] == []
    assert rows["embed"]["est_us"] == 4.0
    assert rows["embed"]["ratio"] == pytest.approx(4.0 / (embed["seconds"] * 1e6))
    mm = next(g for g in joined["decode"]["by_kernel"] if g["kernel"] == wkv["kernel"])
    assert mm["launches"] == 1 and mm["est_us"] == 5.0
    est = {"target": "sm_90", "card": "H200 SXM", "device": "cpu", "model": "estimate: m",
           "entries": joined}  # fmt: skip
    (tmp_path / "estimate.json").write_text(json.dumps(est))
    _bench_module("gpu_check_report").main([str(tmp_path)])
    md = (tmp_path / "gpu_check.md").read_text()
    assert f"| {wkv['kernel']} | 1 | {wkv['seconds'] * 1e6:.1f} | 5.0 |" in md
