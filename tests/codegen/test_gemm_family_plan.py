"""Every dense projection of a plan is a launch of the one GEMM family (issue 21): wq_a, wq_b,
wkv, wo_a, wo_b, the indexer's wq_b and weights_proj, the compressors' wkv and wgate, the MoE
gate's projection, the MTP block's e_proj and h_proj, and lm_head are each read by `linear`
or `grouped_linear` kernel launches rendered from the `gemm` template, and by no other launch
(no GEMM hidden in another template); no library (torch) launch reads a weight."""

from __future__ import annotations

import pytest

from v4c.codegen import jit
from v4c.codegen.emit import kernel_operands
from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.program import plan_op
from v4c.spec import load_spec

PROJECTIONS = {"wq_a", "wq_b", "wkv", "wo_a", "wo_b", "weights_proj", "wgate", "gate", "head",
               "e_proj", "h_proj"}  # fmt: skip


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
                assert launch.op in ("linear", "grouped_linear"), (launch.node, launch.op)
                shapes = kernel_operands(launch, plan.options["dtype"])
                params = jit.params_for(launch.op, plan_op(launch).attrs(), shapes)
                assert params.TEMPLATE == "gemm", launch.node
    assert found == PROJECTIONS
