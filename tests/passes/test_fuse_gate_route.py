"""fuse_gate_route: each MoE's router projection and route (4 layers + MTP of tiny, hash and
score gates) become one gate_route whose results keep the route's indices; the graph after
the pass computes what it computed before, bit for bit (the fused op's semantics run the
same two ops), with the verifier and the rounding check of the pass manager after it."""

from __future__ import annotations

from collections import Counter

import torch

from tests.passes.conftest import FULL, run_steps
from v4c.ir.build import build
from v4c.ir.graph import Value
from v4c.passes import load_passes
from v4c.passes.base import PassContext
from v4c.passes.manager import run_pipeline
from v4c.passes.pipeline import DEFAULT_PIPELINE

load_passes()


def test_every_route_goes_into_its_gate_gemm(tiny, tiny_weights):
    ctx = PassContext(tiny, FULL)
    upto = DEFAULT_PIPELINE.index("fuse_gate_route")
    before, after = build(tiny), build(tiny)
    run_pipeline(before, ctx, DEFAULT_PIPELINE[:upto])
    run_pipeline(after, ctx, DEFAULT_PIPELINE[: upto + 1])
    k, was = Counter(n.op.kind for n in after.nodes()), Counter(n.op.kind for n in before.nodes())
    assert k["gate_route"] == was["moe_route"] == 5 and k["moe_route"] == 0
    assert was["linear"] - k["linear"] == 5
    fused = after.node("L03.ffn.route_gate")
    assert fused.origin == ("fuse_gate_route", ("L03.ffn.gate_proj", "L03.ffn.route"))
    assert {n.op.gate for n in after.nodes() if n.op.kind == "gate_route"} == {"hash", "score"}
    assert after.operands("L03.ffn.experts")[1:4] == [fused.out(2), fused.out(3), fused.out(0)]
    assert after.operands("head.hc_fused")[1] == Value("L03.ffn.route_gate", 4)
    outs = zip(run_steps(before, tiny_weights), run_steps(after, tiny_weights), strict=True)
    for b, a in outs:
        assert b.keys() == a.keys() and all(torch.equal(b[key], a[key]) for key in b)
