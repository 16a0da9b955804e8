"""dce: remove nodes whose results nobody uses, except outputs."""

from __future__ import annotations

from v4c.ir.graph import Graph
from v4c.passes.base import PassContext, PassResult, register_pass


@register_pass("dce")
def dce(graph: Graph, ctx: PassContext) -> PassResult:
    removed = 0
    for id in reversed(graph.toposort()):
        node = graph.node(id)
        if not node.op.side_effects and not any(True for _ in graph.users(id)):
            graph.erase(id)
            removed += 1
    return PassResult(removed > 0, {"removed": removed})
