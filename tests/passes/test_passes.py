"""Every pass of the default pipeline preserves what the tiny model computes (prefill,
decode, and prefill after earlier tokens), and does what it says to the graph."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.passes.conftest import FULL, assert_same_outputs, graph_before, run_steps
from v4c.ir.weights import WeightFormat
from v4c.ir.graph import Value
from v4c.ir.ops.hc import HcExpand
from v4c.ir.plan import Plan, Ref
from v4c.passes import load_passes
from v4c.passes.base import PASSES, PassContext
from v4c.passes.entries import entry_outputs
from v4c.passes.memory_plan import entry_nodes
from v4c.passes.pipeline import DEFAULT_PIPELINE

load_passes()


def kinds(graph) -> Counter:
    return Counter(n.op.kind for n in graph.nodes())


def apply(name, spec):
    before = graph_before(spec, name)
    after = before.copy()
    result = PASSES[name](after, PassContext(spec, FULL))
    return before, after, result


@pytest.mark.parametrize(
    "name",
    [
        "fuse_hc_norm",
        "fuse_rope",
        "fuse_norms",
        "schedule_moe",
        "fuse_moe_route",
        "fuse_moe_hc",
        "merge_linears",
    ],
)
def test_rewrite_pass_preserves_outputs(name, tiny, tiny_weights):
    before, after, result = apply(name, tiny)
    assert result.changed
    assert_same_outputs(run_steps(before, tiny_weights), run_steps(after, tiny_weights))


def test_fuse_hc_norm_leaves_no_unfused_hc(tiny):
    before, after, result = apply("fuse_hc_norm", tiny)
    k = kinds(after)
    assert k["hc_pre"] == k["hc_post"] == k["hc_head"] == 0
    # 5 blocks (4 + MTP) x 2 sublayers: the first of main and of MTP have no hc_post before them
    assert (k["hc_pre_norm"], k["hc_post_pre_norm"], k["hc_post_head_norm"]) == (2, 8, 2)
    assert result.stats["rms_norm(hc_pre(hc_post)) -> hc_post_pre_norm"] == 8
    assert kinds(before)["rms_norm"] - k["rms_norm"] == 12
    fused = after.node("L01.attn.hc_fused")
    assert fused.origin == ("fuse_hc_norm", ("L00.ffn.hc_post", "L01.attn.hc_pre", "L01.attn_norm"))


def test_fuse_rope_folds_q_and_kv(tiny):
    _, after, result = apply("fuse_rope", tiny)
    k = kinds(after)
    assert k["rms_norm_rope"] == 10 and k["rope"] == 5  # only the inverse rope on the output
    assert all(n.op.inverse for n in after.nodes() if n.op.kind == "rope")
    assert not after.node("L00.attn.q_head_norm_rope").op.weighted
    assert after.node("L02.attn.kv_norm_rope").op.yarn is not None


def test_fuse_norms_pairs_the_q_and_kv_norms(tiny):
    """Each of the 5 attentions (4 layers + MTP): q_norm and kv_norm_rope, projections of one
    activation, become one qkv_norm; the weightless per-head q norms and the MTP block's input
    norms (of the embedding and of the streams) stay as they are."""
    before, after, result = apply("fuse_norms", tiny)
    k = kinds(after)
    assert k["qkv_norm"] == 5 and kinds(before)["rms_norm_rope"] - k["rms_norm_rope"] == 5
    left = [n.id for n in after.nodes() if n.op.kind.startswith("rms_norm") and n.op.weighted]
    assert left == ["M00.enorm", "M00.hnorm"]
    fused = after.node("L02.attn.qkv_norm")
    assert fused.origin == ("fuse_norms", ("L02.attn.q_norm", "L02.attn.kv_norm_rope"))
    assert fused.op.yarn is not None and after.is_acyclic()


def test_schedule_moe_makes_the_dispatch_schedule(tiny):
    _, after, _ = apply("schedule_moe", tiny)
    k = kinds(after)
    assert k["moe"] == k["swiglu"] - 5 == 0 and k["add"] == 1  # the MTP input add stays
    assert k["moe_gate"] == k["moe_sort"] == k["grouped_swiglu"] == k["moe_combine"] == 5
    assert {n.op.gate for n in after.nodes() if n.op.kind == "moe_gate"} == {"hash", "score"}
    combine = after.node("L03.ffn.combine")
    assert combine.op.with_shared
    assert after.operands(combine.id)[2] == Value("L03.ffn.shared0")


def test_fuse_moe_route_joins_gate_and_sort(tiny):
    """Each of the 5 MoEs: its gate and sort become one moe_route, whose rows the combine
    reads (no inversion); the grouped experts read the route's order, offsets and weights."""
    _, after, result = apply("fuse_moe_route", tiny)
    k = kinds(after)
    assert k["moe_route"] == 5 and k["moe_gate"] == k["moe_sort"] == 0
    assert result.stats == {"moe_sort(moe_gate) -> moe_route": 5}
    route, combine = after.node("L03.ffn.route"), after.node("L03.ffn.combine")
    assert route.origin == ("fuse_moe_route", ("L03.ffn.gate", "L03.ffn.sort"))
    assert route.op.num_experts == tiny.moe.num_experts and route.op.gate == "score"
    assert combine.op.rows and combine.op.with_shared
    assert after.operands(combine.id)[1] == route.out(4)
    experts = after.operands("L03.ffn.experts")
    assert experts[1:4] == [route.out(2), route.out(3), route.out(0)]


def test_fuse_moe_hc_folds_every_combine(tiny):
    """Each of the 5 MoEs' combines (4 layers + MTP) goes into the HC op after it: the next
    layer's hc_post_pre_norm, or the head's hc_post_head_norm (the last layer, the MTP
    block), which then reads the expert rows, the route's rows and the shared expert."""
    _, after, result = apply("fuse_moe_hc", tiny)
    assert kinds(after)["moe_combine"] == 0 and sum(result.stats.values()) == 5
    hc = after.node("L01.attn.hc_fused")
    assert hc.op.moe and hc.op.kind == "hc_post_pre_norm"
    operands = after.operands(hc.id)
    combine = [Value("L00.ffn.experts"), Value("L00.ffn.route", 4), Value("L00.ffn.shared0")]
    assert operands[:3] == combine
    assert all(n.op.moe for n in after.nodes() if n.op.kind == "hc_post_head_norm")


def test_merge_linears_puts_the_projections_of_one_input_in_one_launch(tiny):
    """The linears that read one value (the attention's normed input: 7 in a CSA layer, 4 in
    an HCA one, 2 with the window only; the q latent: wq_b and the indexer's wq_b) become one
    merged_linear each, its parts in id order with their own out dtypes; every consumer reads
    the part's result as it read the linear's; the rest stay linears."""
    before, after, result = apply("merge_linears", tiny)
    merged = {n.id: n for n in after.nodes() if n.op.kind == "merged_linear"}
    sizes = {id: len(n.op.out_dtypes) for id, n in merged.items()}
    assert sizes == {
        "L00.attn.hc_fused.linears": 2,  # window only
        "L01.attn.hc_fused.1.linears": 7,  # CSA
        "L01.attn.qkv_norm.linears": 2,
        "L02.attn.hc_fused.1.linears": 4,  # HCA
        "L03.attn.hc_fused.1.linears": 7,
        "L03.attn.qkv_norm.linears": 2,
        "M00.attn.hc_fused.linears": 2,
    }
    assert result.stats == {"launches": 7, "linears merged": 26}
    assert kinds(before)["linear"] - kinds(after)["linear"] == 26
    csa = merged["L01.attn.hc_fused.1.linears"]
    parts = csa.origin[1]
    assert csa.origin[0] == "merge_linears" and list(parts) == sorted(parts)
    assert parts[-2:] == ("L01.attn.wkv", "L01.attn.wq_a")
    assert csa.op.out_dtypes == ("fp32",) * 4 + ("bf16",) * 3  # the compressors' are fp32
    for i, id in enumerate(parts):
        assert after.operands(csa.id)[i + 1] == before.operands(id)[1]  # its own weight
        users = sorted((u, slot) for u, slot, out in after.users(csa.id) if out == i)
        assert users == sorted((u, slot) for u, slot, _ in before.users(id))
    assert {n.id for n in after.nodes() if n.op.kind == "linear"} >= {
        "L00.attn.wq_b", "L02.attn.wq_b", "head.lm_head"
    }  # fmt: skip
    # the router's projection is never merged: it runs inside its route (fuse_gate_route)
    assert {p for n in after.nodes() if n.op.kind == "gate_route" for p in n.origin[1]} >= {
        "L01.ffn.gate_proj"
    }  # fmt: skip


def test_dce_removes_dead_nodes_and_keeps_outputs(tiny, tiny_weights):
    before = graph_before(tiny, "dce")
    after = before.copy()
    after.add("dead", HcExpand(2), [Value("embed")])
    after.add("dead2", HcExpand(2), [Value("dead")])
    result = PASSES["dce"](after, PassContext(tiny, FULL))
    assert result.stats == {"removed": 2} and "dead" not in after
    assert_same_outputs(run_steps(before, tiny_weights), run_steps(after, tiny_weights))


def test_memory_plan_never_overlaps_live_buffers(tiny):
    graph = graph_before(tiny, "memory_plan")
    PASSES["memory_plan"](graph, PassContext(tiny, FULL))
    from v4c.passes.entries import entry_outputs
    from v4c.passes.memory_plan import entry_nodes, graph_outputs, lifetimes

    for entry, outputs in entry_outputs(FULL, tiny).items():
        # live within the entry's own steps: a value a node of another entry reads later (the
        # head's streams, read by the MTP block at draft) is dead at decode after its last use
        nodes = entry_nodes(graph, graph_outputs(graph, outputs))
        life = {str(v): span for v, span in lifetimes(graph, nodes).items()}
        plan = graph.meta["memory_plan"][entry]
        rows = [(life[v], o, s) for v, (o, s) in plan["buffers"].items()]
        for i, ((f1, l1), o1, s1) in enumerate(rows):
            for (f2, l2), o2, s2 in rows[i + 1 :]:
                if f1 <= l2 and f2 <= l1:  # both live at some step
                    assert o1 + s1 <= o2 or o2 + s2 <= o1
        assert plan["peak_bytes"] < plan["unshared_bytes"]


def test_lower_makes_a_plan_that_round_trips(tiny):
    graph = graph_before(tiny, "lower")
    PASSES["lower"](graph, PassContext(tiny, FULL))
    plan = graph.meta["plan"]
    assert Plan.from_json(plan.to_json()).to_json() == plan.to_json()
    for name, outputs in entry_outputs(FULL, tiny).items():
        runs = entry_nodes(graph, outputs)
        compute = [
            n.id
            for n in graph.nodes()
            if n.id in runs and not n.op.source and n.op.kind != "output"
        ]
        assert [launch.node for launch in plan.entries[name].launches] == compute
    decode = plan.entries["decode"]
    main = {n.id for n in graph.nodes() if not n.id.startswith(("M00.", "in.", "w.", "cache."))}
    draft = {launch.node for launch in plan.entries["draft"].launches}
    assert draft and not draft & main  # the MTP block alone
    kinds = {launch.op: launch.kind for launch in decode.launches}
    assert kinds["split_heads"] == "view" and kinds["linear"] == "kernel"
    assert kinds["sparse_attention_rope"] == "kernel"  # with its RoPE folded in (fuse_attn_*)
    assert decode.env == {"B": 1, "N": 1, "T": 1, "S": 8192}
    core = next(launch for launch in decode.launches if launch.node == "L01.attn.core_rope")
    assert core.inputs[3] == Ref("input", "slots", (1,), "i64", 0, ("B",))
    assert core.inputs[5] == Ref("state", "L01.window", (1, 16, 128), "bf16", 0, ("N", 16, 128))
    assert plan.states["L01.window"]["shape"] == ["N", 16, 128]
    # wq_a: the last part (by id) of the merged launch of its input's linears
    proj = next(
        launch for launch in decode.launches if launch.node == "L01.attn.hc_fused.1.linears"
    )
    assert (proj.kind, proj.kernel) == ("kernel", "merged_linear")  # the GEMM family's
    assert proj.fuses[-1] == "L01.attn.wq_a" and len(proj.outputs) == len(proj.inputs) - 1 == 7
    wq_a = proj.inputs[-1]
    assert wq_a.kind == "param" and wq_a.name == "layers.1.attn.wq_a.weight"
    assert proj.inputs[0].dims == ("B", "T", tiny.hidden_size)
    assert proj.outputs[-1].name == "%L01.attn.hc_fused.1.linears:6"
    # tiny stores FP8 dense and FP4 routed weights: the GEMMs and the expert kernels read
    # them as stored, and the plan's launches say so
    assert plan.params["layers.1.attn.wq_a.weight"].format == WeightFormat.fp8((128, 128))
    assert wq_a.dtype == "bf16" and wq_a.format == WeightFormat.fp8()
    experts = plan.params["layers.1.ffn.experts.{e}.w1.weight"]
    assert (experts.dtype, experts.format) == ("bf16", WeightFormat.fp4(32))
    shared = plan.params["layers.1.ffn.shared_experts.w1.weight"]
    assert shared.format == WeightFormat.fp8((128, 128))
    assert set(decode.outputs) == {"logits"}
    assert set(plan.entries["verify"].outputs) == set(plan.entries["draft"].outputs)
    assert plan.entries["verify"].env["T"] == FULL.max_draft + 1


def test_default_pipeline_is_registered():
    assert all(name in PASSES for name in DEFAULT_PIPELINE)


def test_select_outputs_drops_mtp_and_narrows_logits(tiny, tiny_weights):
    """Without drafts the MTP block goes and the one lm_head is narrowed to the last token."""
    from v4c.passes.base import CompileOptions

    full = graph_before(tiny, "select_outputs")
    pruned = full.copy()
    options = CompileOptions(max_draft=0)
    PASSES["select_outputs"](pruned, PassContext(tiny, options))
    PASSES["dce"](pruned, PassContext(tiny, options))
    assert not any(n.id.startswith("M00.") for n in pruned.nodes())
    assert pruned.type_of(Value("head.lm_head")).shape == ("B", 1, 129280)
    for b, a in zip(run_steps(full, tiny_weights), run_steps(pruned, tiny_weights), strict=True):
        assert set(a) == {"last_logits"}
        assert_same_outputs([{"last_logits": b["logits"][:, -1:]}], [a])


def test_select_outputs_keeps_every_token_for_verify_and_the_last_for_the_rest(tiny, tiny_weights):
    """With drafts: verify's every-token logits beside a second head on the last tokens, and
    the MTP block's logits and streams at the last token."""
    from v4c.passes.base import CompileOptions

    full = graph_before(tiny, "select_outputs")
    pruned = full.copy()
    PASSES["select_outputs"](pruned, PassContext(tiny, CompileOptions()))
    PASSES["dce"](pruned, PassContext(tiny, CompileOptions()))
    assert pruned.type_of(Value("head.lm_head")).shape == ("B", "T", 129280)
    assert pruned.type_of(Value("head.lm_head_on_last")).shape == ("B", 1, 129280)
    assert pruned.type_of(Value("M00.lm_head")).shape == ("B", 1, 129280)
    for b, a in zip(run_steps(full, tiny_weights), run_steps(pruned, tiny_weights), strict=True):
        assert set(a) == {"logits", "last_logits", "hidden", "last_mtp_logits", "last_mtp_hidden"}
        last = {k: b[k.removeprefix("last_")][:, -1:] for k in a if k.startswith("last_")}
        assert_same_outputs([{**last, "logits": b["logits"], "hidden": b["hidden"]}], [a])


def test_lowered_plan_computes_what_the_graph_computes(tiny, tiny_weights):
    """lower is checked by executing its plan (the torch backend) against the graph."""
    from dataclasses import replace

    from tests.passes.conftest import steps
    from tests.plan_runner import PlanRunner
    from v4c.runtime.reference import ReferenceExecutor

    graph = graph_before(tiny, "memory_plan")
    ctx = PassContext(tiny, replace(FULL, max_batch=2, max_tokens=32, max_seq=64, dtype="fp32"))
    PASSES["memory_plan"](graph, ctx)
    PASSES["lower"](graph, ctx)
    plan = graph.meta["plan"]
    params = {name: tiny_weights[name] for name in plan.params}
    state = ReferenceExecutor(graph, tiny_weights).new_state(batch=2, max_seq=64)
    runner = PlanRunner(plan, params, state)
    plan_out, graph_out = [], run_steps(graph, tiny_weights)
    for step, want in zip(steps(), graph_out):
        got = runner.run(step)  # the main model: prefill or decode
        got.update({f"mtp_{k}": v for k, v in runner.run(step, "draft").items()})
        plan_out.append(got)
        for key in set(want) - set(got):  # decode returns no hidden
            del want[key]
    assert_same_outputs(graph_out, plan_out)
