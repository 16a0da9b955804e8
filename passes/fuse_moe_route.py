"""fuse_moe_route: a scheduled MoE's gate and the sort of its expert ids become one op
(`moe_route`), so a decode step runs one small launch for both, and the sort also writes each
slot's row in the sorted order, so the combine reads its rows directly instead of inverting
the order in a launch of its own.

The rule takes a `moe_sort` whose ids are a `moe_gate`'s and used by nothing else; every
`moe_combine` of that sort's order then reads the route's rows (`MoeCombine.rows`). Runs
after schedule_moe, which makes the gate, the sort and the combine.
"""

from __future__ import annotations

import dataclasses

from v4c.ir.graph import Graph, Node
from v4c.ir.ops.moe import MoeRoute
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import Rule, only_user, producer, replace, rewrite

NAME = "fuse_moe_route"


def route(graph: Graph, sort: Node) -> bool:
    if sort.op.kind != "moe_sort":
        return False
    gate, index = producer(graph, sort, 0)
    if gate.op.kind != "moe_gate" or index != 1 or only_user(graph, gate.out(1)) is None:
        return False
    fields = {f.name: getattr(gate.op, f.name) for f in dataclasses.fields(gate.op)}
    op = MoeRoute(**fields, num_experts=sort.op.num_experts)
    fused = graph.add(
        f"{gate.id.rsplit('.', 1)[0]}.route",
        op,
        graph.operands(gate.id),
        layer=gate.layer,
        origin=(NAME, (gate.id, sort.id)),
    )
    for user, operand, out in list(graph.users(sort.id)):
        combine = graph.node(user)
        if combine.op.kind == "moe_combine" and operand == 1 and out == 0:
            operands = graph.operands(user)
            operands[1] = fused.out(4)
            graph.replace_op(user, dataclasses.replace(combine.op, rows=True), operands)
    pairs = [(gate.out(0), fused.out(0)), (gate.out(1), fused.out(1))]
    pairs += [(sort.out(0), fused.out(2)), (sort.out(1), fused.out(3))]
    replace(graph, pairs, [sort, gate])
    return True


RULES = [Rule("moe_sort(moe_gate) -> moe_route", route)]


@register_pass(NAME)
def fuse_moe_route(graph: Graph, ctx: PassContext) -> PassResult:
    stats = rewrite(graph, RULES)
    return PassResult(any(stats.values()), stats)
