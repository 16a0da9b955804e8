"""fuse_rope: RoPE folded into the RMSNorm that precedes it (the kv norm, and the
weightless per-head q norm), so the rotated vector is written once."""

from __future__ import annotations

from v4c.ir.graph import Graph, Node
from v4c.ir.ops.norm import RmsNormRope
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import Rule, only_user, producer, replace, rewrite

NAME = "fuse_rope"


def norm_rope(graph: Graph, rope: Node) -> bool:
    if rope.op.kind != "rope" or rope.op.inverse:
        return False
    norm, index = producer(graph, rope, 0)
    if norm.op.kind != "rms_norm" or index != 0 or only_user(graph, norm.out(0)) is None:
        return False
    op = RmsNormRope(
        rope.op.rope_dim, rope.op.theta, rope.op.yarn,
        eps=norm.op.eps, weighted=norm.op.weighted, inline=norm.op.inline,
    )  # fmt: skip
    x, *weight = graph.operands(norm.id)
    positions = graph.operands(rope.id)[1]
    fused = graph.add(
        f"{norm.id}_rope",
        op,
        [x, positions, *weight],
        layer=rope.layer,
        origin=(NAME, (norm.id, rope.id)),
    )
    replace(graph, [(rope.out(0), fused.out(0))], [rope, norm])
    return True


RULES = [Rule("rope(rms_norm(x)) -> rms_norm_rope", norm_rope)]


@register_pass(NAME)
def fuse_rope(graph: Graph, ctx: PassContext) -> PassResult:
    stats = rewrite(graph, RULES)
    return PassResult(any(stats.values()), stats)
