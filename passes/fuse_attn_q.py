"""fuse_attn_q: the per-head q norm + RoPE (the weightless `rms_norm_rope` on the q heads)
folded into the sparse attention that reads it (`sparse_attention_rope` with `q_norm`): the
attention's programs normalise and rotate the q they load, so a decode step has no launch
of 64 small programs per layer for it, and the rotated q is never written.

The rule takes a `sparse_attention` whose q is a weightless rms_norm_rope's result used by
nothing else, at the attention's own positions. Runs after fuse_rope, which makes the
rms_norm_rope, and after simulate_numerics, whose `inline` and `round_probs` it carries.
"""

from __future__ import annotations

import dataclasses

from v4c.ir.graph import Graph, Node
from v4c.ir.ops.attention import SparseAttentionRope
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import Rule, only_user, producer, replace, rewrite

NAME = "fuse_attn_q"


def q_norm(graph: Graph, attn: Node) -> bool:
    if attn.op.kind != "sparse_attention":
        return False
    norm, index = producer(graph, attn, 0)
    if norm.op.kind != "rms_norm_rope" or norm.op.weighted or index != 0:
        return False
    operands = graph.operands(attn.id)
    x, positions = graph.operands(norm.id)
    if positions != operands[2] or only_user(graph, norm.out(0)) is None:
        return False
    op = dataclasses.replace(
        SparseAttentionRope.of(attn.op, norm.op), q_norm=True, eps=norm.op.eps,
        inline=norm.op.inline,
    )  # fmt: skip
    fused = graph.add(
        f"{attn.id}_rope",
        op,
        [x, *operands[1:]],
        layer=attn.layer,
        origin=(NAME, (norm.id, attn.id)),
    )
    replace(graph, [(attn.out(0), fused.out(0))], [attn, norm])
    return True


RULES = [Rule("sparse_attention(rms_norm_rope(q)) -> sparse_attention_rope", q_norm)]


@register_pass(NAME)
def fuse_attn_q(graph: Graph, ctx: PassContext) -> PassResult:
    stats = rewrite(graph, RULES)
    return PassResult(any(stats.values()), stats)
