"""fuse_gate_route: the MoE router's projection (the `linear` to fp32 logits) and the
`moe_route` that reads them become one op (`gate_route`), so a decode step routes its
tokens in the gate GEMM's launch (its last program to finish) instead of a launch of one
program after it.

The rule takes a moe_route whose logits are a plain linear's (fp32 out, no FP8 rounding of
its input) used by nothing else. Runs after fuse_moe_route and fuse_moe_hc, which make and
read the route; the fused op keeps the route's results at their indices.
"""

from __future__ import annotations

import dataclasses

from v4c.ir.graph import Graph, Node
from v4c.ir.ops.moe import GateRoute
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import Rule, only_user, producer, replace, rewrite

NAME = "fuse_gate_route"
ROUTE_RESULTS = 5


def gate_route(graph: Graph, route: Node) -> bool:
    if route.op.kind != "moe_route":
        return False
    proj, index = producer(graph, route, 0)
    if proj.op.kind != "linear" or proj.op.out_dtype != "fp32" or proj.op.act_quant:
        return False
    if index != 0 or only_user(graph, proj.out(0)) is None:
        return False
    fields = {f.name: getattr(route.op, f.name) for f in dataclasses.fields(route.op)}
    fused = graph.add(
        f"{route.id}_gate",
        GateRoute(**fields),
        [*graph.operands(proj.id), *graph.operands(route.id)[1:]],
        layer=route.layer,
        origin=(NAME, (proj.id, route.id)),
    )
    pairs = [(route.out(i), fused.out(i)) for i in range(ROUTE_RESULTS)]
    replace(graph, [*pairs, (proj.out(0), fused.out(ROUTE_RESULTS))], [route, proj])
    return True


RULES = [Rule("moe_route(linear) -> gate_route", gate_route)]


@register_pass(NAME)
def fuse_gate_route(graph: Graph, ctx: PassContext) -> PassResult:
    stats = rewrite(graph, RULES)
    return PassResult(any(stats.values()), stats)
