"""Every dense projection of a plan is a launch of the one GEMM family (issue 21): wq_a, wq_b,
wkv, wo_a, wo_b, the indexer's wq_b and weights_proj, the compressors' wkv and wgate, the MoE
gate's projection, the MTP block's e_proj and h_proj, and lm_head are each read only by
launches of the family: `linear`/`grouped_linear` (the `gemm` template), `merged_linear` (the
projections of one input in one launch, passes/merge_linears.py) and `gate_route` (the
router's GEMM with the route in its launch, passes/fuse_gate_route.py), whose templates compute
every tile with codegen/kernels/gemm.py (no GEMM of its own hidden in another template); no
library (torch) launch reads a weight."""

from __future__ import annotations

from pathlib import Path

import pytest

from v4c.codegen import jit
from v4c.codegen.emit import kernel_operands
from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.program import plan_op
from v4c.spec import load_spec

PROJECTIONS = {"wq_a", "wq_b", "wkv", "wo_a", "wo_b", "weights_proj", "wgate", "gate", "head",
               "e_proj", "h_proj"}  # fmt: skip
# the family's ops and their templates
FAMILY = {"linear": "gemm", "grouped_linear": "gemm", "merged_linear": "merged_linear",
          "gate_route": "gate_route"}  # fmt: skip
TEMPLATES = Path(jit.__file__).parent / "templates"


@pytest.mark.parametrize("numerics", ["plain", "official"])
def test_every_dense_projection_is_a_gemm_family_launch(numerics):
    options = CompileOptions(max_batch=1, max_seq=160, numerics=numerics)
    plan = compile_spec(load_spec("tiny"), options).plan
    found = set()
    for entry in plan.entries.values():
        for launch in entry.launches:
            weights = [r for r in launch.inputs if r.kind == "param"]
            assert launch.kind != "library" or not weights, launch.node
            for ref in weights:
                module = ref.name.rsplit(".", 2)[-2] if ref.name.endswith(".weight") else ""
                if module not in PROJECTIONS:
                    continue
                found.add(module)
                assert launch.kind == "kernel", launch.node
                assert launch.op in FAMILY, (launch.node, launch.op)
                shapes = kernel_operands(launch, plan.options["dtype"])
                params = jit.params_for(launch.op, plan_op(launch).attrs(), shapes)
                assert params.TEMPLATE == FAMILY[launch.op], launch.node
                source = (TEMPLATES / f"{params.TEMPLATE}.py.j2").read_text()
                assert "from v4c.codegen.kernels.gemm import" in source, params.TEMPLATE
    assert found == PROJECTIONS
