"""The draft entry point runs the MTP block alone: it binds no main-model tensor but the
shared embedding and head (§11), and its logits and streams are the built graph's MTP outputs
on the same random weights and inputs (the `hidden` streams given, as the engine gives them)."""

from __future__ import annotations

from dataclasses import replace

from tests.passes.conftest import FULL, assert_same_outputs, steps
from tests.plan_runner import PlanRunner
from v4c.compile import compile_spec
from v4c.ir.build import build
from v4c.runtime.reference import ReferenceExecutor


def test_the_draft_entry_is_the_mtp_block_alone(tiny, tiny_weights):
    options = replace(FULL, max_batch=2, max_tokens=32, max_seq=64, weights="bf16", dtype="fp32")
    plan = compile_spec(tiny, options).plan
    draft = plan.entries["draft"]
    bound = {r.name for launch in draft.launches for r in launch.inputs if r.kind == "param"}
    assert bound and all(n.startswith("mtp.") for n in bound - {"embed.weight", "head.weight"})
    assert {r.name for launch in draft.launches for r in launch.inputs if r.kind == "state"} == {
        "M00.window"
    }
    executor = ReferenceExecutor(build(tiny), tiny_weights)
    state = executor.new_state(batch=2, max_seq=64)
    runner = PlanRunner(plan, {n: tiny_weights[n] for n in plan.params}, {
        k: v.clone() for k, v in state.items()
    })  # fmt: skip
    for step in steps():
        want = executor.run(step, state, outputs=("mtp_logits", "mtp_hidden"))
        got = runner.run(step, "draft")
        assert_same_outputs([want], [{"mtp_" + k: v for k, v in got.items()}])
