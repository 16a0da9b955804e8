"""The pass manager: dumps after every pass, manifest, disabled and unknown passes, and
failures that name the pass and what ran before it."""

from __future__ import annotations

import json

import pytest

from v4c.errors import IRError
from v4c.ir.build import build
from v4c.ir.ops.gemm import Linear
from v4c.ir.types import TensorType
from v4c.ir.printer import parse_graph, print_graph
from v4c.passes.base import PASSES, PassContext, PassResult, register_pass
from v4c.passes.manager import run_pipeline
from v4c.passes.pipeline import DEFAULT_PIPELINE


def test_dumps_every_pass_and_a_manifest(tiny, tmp_path):
    graph = build(tiny)
    records = run_pipeline(graph, PassContext(tiny), dump_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = ["000_build.ir"] + [f"{i:03d}_{n}.ir" for i, n in enumerate(DEFAULT_PIPELINE, 1)]
    assert names == sorted(expected + ["manifest.json"])
    assert (tmp_path / f"{len(DEFAULT_PIPELINE):03d}_lower.ir").read_text() == print_graph(graph)
    assert print_graph(parse_graph((tmp_path / "000_build.ir").read_text())) == print_graph(
        build(tiny)
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [row["pass"] for row in manifest] == DEFAULT_PIPELINE
    assert manifest[0]["changed"] and manifest[0]["stats"] == records[0].stats


def test_disabled_pass_is_skipped(tiny):
    graph = build(tiny)
    records = run_pipeline(graph, PassContext(tiny), disabled={"fuse_rope"})
    assert [r.name for r in records if r.skipped] == ["fuse_rope"]
    kinds = {n.op.kind for n in graph.nodes()}
    assert "rms_norm_rope" not in kinds and "hc_post_pre_norm" in kinds


def test_unknown_pass_and_missing_requirement(tiny):
    with pytest.raises(IRError, match="unknown pass 'fuse_everything'; passes: dce, "):
        run_pipeline(build(tiny), PassContext(tiny), ["fuse_everything"])
    with pytest.raises(IRError, match=r"pass 'lower' needs \['memory_plan'\] to run before it"):
        run_pipeline(build(tiny), PassContext(tiny), ["dce", "lower"])


def test_a_broken_pass_is_named_with_what_ran_before(tiny):
    @register_pass("break_types_for_test")
    def breaker(graph, ctx):
        wrong = (TensorType(("B", "T", 3), "bf16"),)
        graph.add("broken", Linear(), graph.operands("L00.attn.wq_a"), wrong)
        return PassResult(True)

    try:
        with pytest.raises(
            IRError,
            match=r"pass break_types_for_test failed after \['dce'\]: verify: broken: types",
        ):
            run_pipeline(build(tiny), PassContext(tiny), ["dce", "break_types_for_test"])
    finally:
        del PASSES["break_types_for_test"]
