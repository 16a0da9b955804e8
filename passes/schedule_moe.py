"""schedule_moe: each layer's `moe` (and the shared expert added to it) becomes an explicit
dispatch schedule:

    moe_gate (score: sqrt-softplus + bias top-k; hash: tid2eid[token]) -> (weights, idx)
    moe_sort (token slots sorted by expert)                             -> (order, offsets)
    grouped_swiglu (one GEMM group per expert, weight applied before w2) -> y_sorted
    moe_combine (weighted scatter-add back to tokens + shared expert)    -> out

The shared expert runs alongside the routed ones and is added in the combine, so the
`add` node disappears. Hash-gated layers use the same schedule with a table gate.
"""

from __future__ import annotations

from v4c.ir.graph import Graph, Node
from v4c.ir.ops.gemm import Linear
from v4c.ir.roles import Projection
from v4c.ir.ops.moe import GroupedSwiglu, MoeCombine, MoeGate, MoeSort
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import Rule, only_user, replace, rewrite

NAME = "schedule_moe"


def _shared_add(graph: Graph, moe: Node) -> tuple[Node, int] | None:
    """The `add(moe, swiglu)` after `moe`, and the index of the shared operand in it."""
    add = only_user(graph, moe.out(0))
    if add is None or add.op.kind != "add":
        return None
    operands = graph.operands(add.id)
    other = 1 if operands[0].node == moe.id else 0
    return (add, other) if graph.node(operands[other].node).op.kind == "swiglu" else None


def schedule(graph: Graph, moe: Node) -> bool:
    if moe.op.kind != "moe":
        return False
    op, layer, base = moe.op, moe.layer, moe.id.rsplit(".", 1)[0]
    *gate_operands, w1, w2, w3 = graph.operands(moe.id)
    roles = dict(zip(op.gate_roles(), gate_operands))
    x = roles.pop("x")
    origin = (NAME, (moe.id,))
    logits = graph.add(  # the router's GEMM, fp32 as the official gate computes it (§10)
        f"{base}.gate_proj", Linear("fp32", role=Projection.GATE), [x, roles.pop("gate_weight")],
        layer=layer, origin=origin,
    )  # fmt: skip
    gate = graph.add(
        f"{base}.gate",
        MoeGate(
            op.gate, op.top_k, op.route_scale, op.scoring_func, op.norm_topk_prob,
            op.local_experts,
        ),
        [logits.out(0), *roles.values()], layer=layer, origin=origin,
    )  # fmt: skip
    groups = graph.type_of(w1).shape[0] + (1 if op.local_experts else 0)  # + other ranks'
    sort = graph.add(
        f"{base}.sort",
        MoeSort(groups),
        [gate.out(1)],
        layer=layer,
        origin=origin,
    )
    experts = graph.add(
        f"{base}.experts",
        GroupedSwiglu(op.limit, op.act_quant),  # the FP8 rounding of the GEMM inputs stays
        [x, sort.out(0), sort.out(1), gate.out(0), w1, w2, w3],
        layer=layer, origin=origin,
    )  # fmt: skip
    shared = _shared_add(graph, moe)
    if shared is None:
        combine = graph.add(
            f"{base}.combine",
            MoeCombine(False),
            [experts.out(0), sort.out(0)],
            layer=layer,
            origin=origin,
        )
        replace(graph, [(moe.out(0), combine.out(0))], [moe])
        return True
    add, index = shared
    shared_value = graph.operands(add.id)[index]
    combine = graph.add(
        f"{base}.combine", MoeCombine(True), [experts.out(0), sort.out(0), shared_value],
        layer=layer, origin=(NAME, (moe.id, add.id)),
    )  # fmt: skip
    replace(graph, [(add.out(0), combine.out(0))], [add, moe])
    return True


RULES = [Rule("moe -> gate, sort, grouped_swiglu, combine", schedule)]


@register_pass(NAME)
def schedule_moe(graph: Graph, ctx: PassContext) -> PassResult:
    stats = rewrite(graph, RULES)
    return PassResult(any(stats.values()), stats)
