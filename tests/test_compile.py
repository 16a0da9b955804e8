"""`v4c compile`: the output folder, its determinism, the report, and bad input."""

from __future__ import annotations

import filecmp
import json

import pytest

from tests.test_cli import v4c
from v4c.compile import write_output
from v4c.passes.pipeline import DEFAULT_PIPELINE
from v4c.ir.plan import Plan
from v4c.report import decode_read_bytes
from v4c.spec import load_spec


# each real spec compiled for the grid it runs on: Flash on 2 H200s, Pro on 8 (one rank's
# plan; one process holds Flash's ~150 GiB, Pro's ~810 GiB, neither fits one)
@pytest.mark.parametrize("name, tp", [("flash", 2), ("pro", 8)])
def test_compile_real_specs(name, tp, tmp_path):
    out = v4c("compile", name, "--tp", str(tp), "-o", str(tmp_path))
    assert out.returncode == 0, out.stderr
    fits = f"per rank (tp={tp} x ep=1 = {tp} ranks): weights "
    resident = ": fits a 139 GiB device with every expert resident"
    assert fits in out.stdout and out.stdout.rstrip().endswith(resident)
    plan = Plan.from_json((tmp_path / "plan.json").read_text())
    assert set(plan.entries) == {"prefill", "decode", "verify", "draft"}  # both ship MTP
    assert (tmp_path / "ir" / "000_build.ir").exists() and (
        tmp_path / "ir" / f"{len(DEFAULT_PIPELINE):03d}_lower.ir"
    ).exists()
    report = (tmp_path / "report.md").read_text()
    for heading in (
        "Parameter bytes read per decode token",
        "KV cache per sequence",
        "Ops and kernels per decode step",
        "Memory plan",
    ):
        assert heading in report
    kernels = [launch for launch in plan.entries["decode"].launches if launch.kind != "view"]
    assert f"kernel launches per decode step: {len(kernels)} " in report
    assert "## Memory per rank" in report and "| yes (139 GiB) |" in report
    assert plan.options["tp"] == tp and plan.params["head.weight"].split == ((0, tp, "world"),)


def test_compiling_twice_is_byte_identical(tmp_path):
    spec = load_spec("flash")
    write_output(spec, tmp_path / "a")
    write_output(spec, tmp_path / "b")
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    files = ["plan.json", "report.md"] + [f"ir/{p.name}" for p in (tmp_path / "a" / "ir").iterdir()]
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files) == len(DEFAULT_PIPELINE) + 4
    assert not cmp.left_only and not cmp.right_only


def test_report_numbers_for_tiny(tmp_path):
    compiled = write_output(load_spec("tiny"), tmp_path)
    report = (tmp_path / "report.md").read_text()
    # CSA layer: compressed main KV 128 / 4 and indexer keys 64 / 4, bf16 -> (32 + 16) x 2 B
    assert "| csa | 2 | " in report and "| 96 B |" in report
    # HCA: 128 / 128 x 2 B per token
    assert "| hca | 1 | " in report and "| 2 B |" in report
    assert compiled.plan.entries["decode"].env["T"] == 1


def test_pipeline_from_spec_and_cli(tmp_path):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        "extends: tiny.yaml\nname: t\npipeline: [schedule_moe, memory_plan, lower]\n"
    )
    out = v4c("compile", str(spec_file), "-o", str(tmp_path / "o"))
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "o" / "ir" / "manifest.json").read_text())
    assert [row["pass"] for row in manifest] == ["schedule_moe", "memory_plan", "lower"]
    out = v4c(
        "compile", "tiny", "-o", str(tmp_path / "p"), "--passes", "fuse_rope,memory_plan,lower"
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "p" / "ir" / "001_fuse_rope.ir").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("compile", "nowhere.yaml"), "error: nowhere.yaml: spec file not found"),
        (
            ("compile", "tiny", "--passes", "fuse_all,lower"),
            "error: unknown pass 'fuse_all'; passes:",
        ),
        (
            ("compile", "tiny", "--disable-pass", "memory_plan"),
            "error: pass 'lower' needs ['memory_plan']",
        ),
        (
            ("compile", "tiny", "-o", "/proc/v4c-out"),
            "error: /proc/v4c-out: cannot write the output folder",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    out = v4c(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr


def test_dump_ir_folder_and_the_draft_entries(tmp_path):
    out = v4c("compile", "tiny", "-o", str(tmp_path / "o"), "--dump-ir", str(tmp_path / "dumps"),
              "--max-draft", "2", "--all-logits")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dumps" / "000_build.ir").exists() and not (tmp_path / "o" / "ir").exists()
    plan = Plan.from_json((tmp_path / "o" / "plan.json").read_text())
    assert set(plan.entries) == {"prefill", "decode", "verify", "draft"}
    assert set(plan.entries["decode"].outputs) == {"logits"}
    assert plan.entries["prefill"].outputs["logits"].shape == (1, 1024, 129280)
    assert plan.entries["verify"].outputs["logits"].shape == (1, 3, 129280)
    assert plan.entries["draft"].outputs["hidden"].shape == (1, 1024, 4, 256)
    out = v4c("compile", "tiny", "-o", str(tmp_path / "none"), "--max-draft", "0")
    assert set(Plan.from_json((tmp_path / "none" / "plan.json").read_text()).entries) == {
        "prefill",
        "decode",
    }


def test_bytes_read_per_decode_token_for_tiny():
    """The active-per-token rule in bytes, counted by hand: 2 of the 8 FP4 routed experts
    (two e2m1 per byte, one E8M0 scale per 32), one bf16 row of the embedding, one int64 row
    of each hash layer's tid2eid [V, top-k 2], all of the bf16 lm_head [V, 256]."""
    read, whole = decode_read_bytes(load_spec("tiny"))
    per_expert = 3 * (64 * 256 // 2 + 64 * 256 // 32)  # w1, w2, w3 of 64x256
    assert read["routed_experts"] == 4 * 2 * per_expert
    assert whole["routed_experts"] == 4 * 8 * per_expert
    assert read["embedding"] == 256 * 2 and read["tables"] == 2 * (2 * 8)
    assert read["lm_head"] == whole["lm_head"] == 129280 * 256 * 2


def test_a_split_the_spec_cannot_take_names_each_field(tmp_path):
    out = v4c("compile", "tiny", "--tp", "4", "-o", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "error: --tp 4 --ep 1: attention.o_groups (2) is not divisible by tp = 4",
        "error: --tp 4 --ep 1: moe.intermediate_size / tp = 16 is not a multiple of the FP4 "
        "scale block (32): each expert's slice needs whole blocks",
    ]
