"""The `v4c` command as a user runs it: a real process, its output and its exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import DATA, SPECS


def v4c(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "v4c", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_spec_show_flash():
    out = v4c("spec", "show", str(SPECS / "flash.yaml"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "284.33 B" in text and "13.27 B" in text and "6.61 B" in text
    assert "mtp.0" in text and "hca" in text and "hash" in text


def test_spec_show_by_name_and_pro_total():
    out = v4c("spec", "show", "pro")
    assert out.returncode == 0 and "1.57 T" in out.stdout


def test_validate_reports_every_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: tiny.yaml\nname: x\nmoe: {top_k: 12}\n")
    out = v4c("spec", "validate", str(SPECS / "tiny.yaml"), str(bad))
    assert out.returncode == 2
    assert "ok: " in out.stdout
    assert out.stderr == f"error: {bad}:3: moe.top_k: must be <= moe.num_experts (8), got 12\n"


@pytest.mark.parametrize(
    "args",
    [
        ("spec", "show", "nowhere.yaml"),
        ("spec", "export", "tiny", "--format", "onnx"),
        ("spec", "import", "/nonexistent/config.json", "-o", "x.yaml"),
    ],
)
def test_errors_exit_2_without_traceback(args, tmp_path):
    out = v4c(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and out.stderr.strip()


def test_import_then_export_is_the_official_config(tmp_path):
    out = v4c("spec", "import", str(DATA / "pro_config.json"), "-o", str(tmp_path / "pro.yaml"))
    assert out.returncode == 0, out.stderr
    back = v4c("spec", "export", str(tmp_path / "pro.yaml"), "--format", "official")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout) == json.loads((DATA / "pro_config.json").read_text())


def test_export_hf_to_file(tmp_path):
    out = v4c("spec", "export", "tiny", "--format", "hf", "-o", str(tmp_path / "config.json"))
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["layer_types"][1] == "compressed_sparse_attention"
