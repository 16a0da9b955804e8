"""fuse_moe_hc: the MoE combine folded into the fused HC kernel after it (the next layer's
hc_post_pre_norm, or the head's hc_post_head_norm), which sums each token's expert rows and
the shared expert as it reads the sublayer output `a`: one launch fewer per MoE layer, and
`a` is never written.

The rule takes a `moe_combine` that reads rows (moe_route's, see fuse_moe_route) and the
shared expert, whose result only that HC op reads, as its `a`. Runs after fuse_hc_norm and
fuse_moe_route, which make the two ops.
"""

from __future__ import annotations

import dataclasses

from v4c.ir.graph import Graph, Node
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import Rule, producer, rewrite

NAME = "fuse_moe_hc"
POST_KINDS = ("hc_post_pre_norm", "hc_post_head_norm")


def combine_into_hc(graph: Graph, hc: Node) -> bool:
    if hc.op.kind not in POST_KINDS or hc.op.moe:
        return False
    combine, index = producer(graph, hc, 0)
    op = combine.op
    if op.kind != "moe_combine" or not (op.rows and op.with_shared) or index != 0:
        return False
    if [user for user, _, _ in graph.users(combine.id)] != [hc.id]:
        return False
    operands = graph.operands(combine.id) + graph.operands(hc.id)[1:]
    graph.replace_op(hc.id, dataclasses.replace(hc.op, moe=True), operands)
    graph.erase(combine.id)
    return True


RULES = [Rule("hc_post_*_norm(moe_combine) -> hc_post_*_norm{moe}", combine_into_hc)]


@register_pass(NAME)
def fuse_moe_hc(graph: Graph, ctx: PassContext) -> PassResult:
    stats = rewrite(graph, RULES)
    return PassResult(any(stats.values()), stats)
