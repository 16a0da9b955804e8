"""fuse_attn_q and fuse_attn_o: the per-head q norm + RoPE and the inverse RoPE on the output
folded into each sparse attention (4 layers + MTP of tiny), in plain and official numerics.
The fused op's reference semantics run the ops it replaces in the same order, so every
output of the graph after the two passes equals the graph's before them bit for bit; the
pass manager's verifier and rounding check run after each."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tests.passes.conftest import run_steps
from v4c.ir.build import build
from v4c.passes import load_passes
from v4c.passes.base import CompileOptions, PassContext
from v4c.passes.manager import run_pipeline
from v4c.passes.pipeline import DEFAULT_PIPELINE

load_passes()
PASSES = ["fuse_attn_q", "fuse_attn_o"]


def before_and_after(spec, numerics, passes=PASSES):
    """The tiny graph after the default passes before fuse_attn_q, and after `passes` too
    (built again: the manager runs official numerics only with simulate_numerics in front)."""
    ctx = PassContext(spec, CompileOptions(logits="all", numerics=numerics))
    prefix = DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index(PASSES[0])]
    graph, after = build(spec), build(spec)
    run_pipeline(graph, ctx, prefix)
    run_pipeline(after, ctx, prefix + passes)
    return graph, after


@pytest.mark.parametrize("numerics", ["plain", "official"])
def test_every_attention_takes_its_ropes(numerics, tiny, tiny_weights):
    before, after = before_and_after(tiny, numerics)
    k, was = Counter(n.op.kind for n in after.nodes()), Counter(n.op.kind for n in before.nodes())
    assert k["sparse_attention_rope"] == was["sparse_attention"] == 5
    assert k["sparse_attention"] == k["rope"] == 0 and was["rope"] == 5
    assert was["rms_norm_rope"] - k["rms_norm_rope"] == 5  # the q head norms; kv stays
    fused = after.node("L02.attn.core_rope")
    assert fused.origin == ("fuse_attn_q", ("L02.attn.q_head_norm_rope", "L02.attn.core"))
    assert fused.op.q_norm and fused.op.o_rope and fused.op.yarn is not None
    official = numerics == "official"
    assert fused.op.inline == fused.op.round_probs == official
    outs = zip(run_steps(before, tiny_weights), run_steps(after, tiny_weights), strict=True)
    for b, a in outs:
        assert b.keys() == a.keys() and all(torch.equal(b[key], a[key]) for key in b)


def test_each_pass_alone(tiny):
    """fuse_attn_o on its own folds the inverse RoPE into the plain attention (a node of its
    own making); fuse_attn_q after it finds no plain attention left and changes nothing."""
    _, after = before_and_after(tiny, "plain", ["fuse_attn_o", "fuse_attn_q"])
    fused = after.node("L00.attn.core_rope")
    assert fused.origin == ("fuse_attn_o", ("L00.attn.core", "L00.attn.o_rope_inv"))
    assert fused.op.o_rope and not fused.op.q_norm
    assert after.node("L00.attn.q_head_norm_rope").op.kind == "rms_norm_rope"
