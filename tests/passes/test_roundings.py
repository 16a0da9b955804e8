"""numerics: official survives every pass: what `simulate_numerics` placed is still applied
after each later pass and in the final plan (structurally), and the scheduled MoE computes
what the unscheduled one does with the FP8 rounding on (numerically)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from tests.passes.conftest import FULL
from v4c.errors import IRError
from v4c.ir.build import build
from v4c.ir.op import OPS
from v4c.ir.ops.moe import Moe, MoeCombine, MoeGate, MoeSort
from v4c.passes import roundings
from v4c.passes import schedule_moe as schedule_module
from v4c.passes.base import PASSES, CompileOptions, PassContext
from v4c.passes.manager import run_pipeline
from v4c.passes.pipeline import DEFAULT_PIPELINE

OFFICIAL = dataclasses.replace(FULL, numerics="official")
AFTER_NUMERICS = DEFAULT_PIPELINE[DEFAULT_PIPELINE.index("simulate_numerics") + 1 :]


def op_roundings(op) -> list:
    """The roundings of one op; a merged launch's parts each round as the linear it was."""
    parts = op.parts() if op.kind == "merged_linear" else (op,)
    return [r for part in parts for r in part.roundings()]


def live_roundings(graph) -> Counter:
    """Every rounding an output depends on, counted (independent of node ids and origins)."""
    live = roundings.live_nodes(graph)
    return Counter(r for n in graph.nodes() if n.id in live for r in op_roundings(n.op))


def plan_roundings(entry) -> Counter:
    """The roundings of a plan entry's launches, read back from their constants."""
    out: Counter = Counter()
    for launch in entry.launches:
        cls = OPS[launch.op]
        fields = {f.name for f in dataclasses.fields(cls)}
        op = cls(**{k: v for k, v in launch.constants.items() if k in fields})
        out.update(op_roundings(op))
    return out


def official_until(spec, name: str):
    """The tiny graph, official numerics, after the default passes before `name`."""
    graph = build(spec)
    run_pipeline(
        graph, PassContext(spec, OFFICIAL), DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index(name)]
    )
    return graph


def test_every_pass_after_simulate_numerics_keeps_every_rounding(tiny):
    graph = official_until(tiny, AFTER_NUMERICS[0])
    placed = live_roundings(graph)
    # what simulate_numerics places on tiny: see test_numerics.py for where
    # 5 routed MoEs + 5 shared experts + the FP8 GEMMs (the 2 indexers' wq_b among them)
    assert placed[("act_quant", True)] == 10 + 24
    assert placed[("sim", "fp8")] == 3 and placed[("sim", "fp4")] == placed[("sim", True)] == 2
    assert ("quant_sim", (128, 0)) not in placed and placed[("quant_sim", (64, 64))] == 5
    assert placed[("round_probs", True)] == placed[("inline", True)] == 5  # one per attention
    ctx = PassContext(tiny, OFFICIAL)
    for name in AFTER_NUMERICS:
        PASSES[name](graph, ctx)
        assert live_roundings(graph) == placed, name
    entries = graph.meta["plan"].entries
    main = plan_roundings(entries["prefill"])
    assert main + plan_roundings(entries["draft"]) == placed  # the MTP block runs in draft
    for entry in ("decode", "verify"):
        assert plan_roundings(entries[entry]) == main, entry
    experts = [n for n in graph.nodes() if n.op.kind == "grouped_swiglu"]
    assert len(experts) == 5 and all(n.op.act_quant for n in experts)


def test_the_manager_names_a_pass_that_drops_a_rounding(tiny, monkeypatch):
    """The issue-11 bug, put back: schedule_moe rebuilding the experts without act_quant."""
    real = schedule_module.GroupedSwiglu
    monkeypatch.setattr(schedule_module, "GroupedSwiglu", lambda limit, act_quant: real(limit))
    with pytest.raises(
        IRError, match=r"pass schedule_moe failed .*act_quant=True of L\d\d.ffn.moe"
    ):
        run_pipeline(build(tiny), PassContext(tiny, OFFICIAL))


def test_check_catches_each_way_of_losing_a_rounding(tiny):
    graph = official_until(tiny, "fuse_hc_norm")
    before = roundings.snapshot(graph)
    # a node that stays but loses its switch
    lost_flag = graph.copy()
    node = lost_flag.node("L01.attn.indexer")
    lost_flag.set_op(node.id, dataclasses.replace(node.op, sim=False))
    with pytest.raises(IRError, match="sim=True of L01.attn.indexer"):
        roundings.check(before, lost_flag, "some_pass")
    # a quant_sim bypassed (its users rewired to its input): still there, but dead
    bypassed = graph.copy()
    q = next(n for n in bypassed.nodes() if n.op.kind == "quant_sim")
    bypassed.replace_uses(q.out(), bypassed.operands(q.id)[0])
    with pytest.raises(IRError, match=f"quant_sim.* of {q.id}"):
        roundings.check(before, bypassed, "some_pass")
    # ... and then erased
    bypassed.erase(q.id)
    with pytest.raises(IRError, match=f"of {q.id}"):
        roundings.check(before, bypassed, "some_pass")
    # removing a rounding nothing uses is fine (dead code)
    roundings.check(before, graph, "some_pass")


def test_official_needs_simulate_numerics(tiny):
    with pytest.raises(IRError, match="numerics official needs the simulate_numerics pass"):
        run_pipeline(build(tiny), PassContext(tiny, OFFICIAL), disabled={"simulate_numerics"})


def test_scheduled_experts_equal_the_unscheduled_on_fp8_rounded_inputs(tiny):
    """The schedule the pass makes (its own ops, attributes as it set them) against the
    unscheduled `moe` with the same switch, on one layer's shapes."""
    graph = official_until(tiny, "schedule_moe")
    moe: Moe = graph.node("L03.ffn.moe").op
    PASSES["schedule_moe"](graph, PassContext(tiny, OFFICIAL))
    proj, gate = graph.node("L03.ffn.gate_proj").op, graph.node("L03.ffn.gate").op
    sort = graph.node("L03.ffn.sort").op
    experts = graph.node("L03.ffn.experts").op
    assert isinstance(gate, MoeGate) and isinstance(sort, MoeSort) and moe.act_quant

    gen = torch.Generator().manual_seed(0)
    d, e, i = tiny.hidden_size, tiny.moe.num_experts, tiny.moe.intermediate_size
    x = torch.randn(1, 7, d, generator=gen)
    gate_w, bias = torch.randn(e, d, generator=gen) / d**0.5, torch.randn(e, generator=gen) / 10
    w1, w3 = (torch.randn(e, i, d, generator=gen) / d**0.5 for _ in range(2))
    w2 = torch.randn(e, d, i, generator=gen) / i**0.5

    (logits,) = proj.run([x, gate_w])
    weights, idx = gate.run([logits, bias])
    order, offsets = sort.run([idx])
    (y,) = experts.run([x, order, offsets, weights, w1, w2, w3])
    (scheduled,) = MoeCombine(False).run([y, order])
    (want,) = moe.run([x, gate_w, bias, w1, w2, w3])
    torch.testing.assert_close(scheduled, want, rtol=1e-6, atol=1e-6)  # fp32: same sums
    (plain,) = dataclasses.replace(moe, act_quant=False).run([x, gate_w, bias, w1, w2, w3])
    assert (plain - want).abs().max() > 1e-3 * want.abs().max()  # the rounding is on


def test_plain_pipeline_places_no_rounding(tiny):
    graph = build(tiny)
    run_pipeline(graph, PassContext(tiny, CompileOptions()))
    assert not live_roundings(graph)
    assert not plan_roundings(graph.meta["plan"].entries["decode"])
