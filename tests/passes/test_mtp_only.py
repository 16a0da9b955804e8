"""`--outputs mtp_logits` alone: the verifier does not ask for the main head's tensors (the
final norm and HC head, which only the main logits read), and the MTP logits are the ones
the full graph computes, on the same random weights and inputs."""

from __future__ import annotations

from tests.passes.conftest import FULL, assert_same_outputs, steps
from v4c.ir.build import build
from v4c.passes.base import CompileOptions, PassContext
from v4c.passes.manager import run_pipeline
from v4c.passes.pipeline import DEFAULT_PIPELINE
from v4c.runtime.reference import ReferenceExecutor
from v4c.spec.tensors import main_head_tensors


def test_mtp_logits_alone_compiles_and_matches_the_full_graph(tiny, tiny_weights):
    full = build(tiny)
    run_pipeline(full, PassContext(tiny, FULL), DEFAULT_PIPELINE[:2])
    alone = build(tiny)
    options = CompileOptions(outputs=("mtp_logits",), logits="all")
    run_pipeline(alone, PassContext(tiny, options), DEFAULT_PIPELINE)  # verified after each
    bound = {n.op.tensor for n in alone.nodes() if n.op.kind == "param"}
    assert not bound & {t.name for t in main_head_tensors(tiny)}
    pruned = build(tiny)
    run_pipeline(pruned, PassContext(tiny, options), DEFAULT_PIPELINE[:2])
    before, after = (first_step(g, tiny_weights) for g in (full, pruned))
    assert_same_outputs([{"mtp_logits": before["mtp_logits"]}], [after])


def first_step(graph, weights):
    """The outputs of the first (prefill) step of `steps()`, on the reference executor."""
    executor = ReferenceExecutor(graph, weights)
    return executor.run(steps()[0], executor.new_state(batch=2, max_seq=64))
