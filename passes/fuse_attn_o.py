"""fuse_attn_o: the inverse RoPE on the attention output (`rope` with `inverse`, which
undoes the rotation the values carry because K = V) folded into the sparse attention that
makes it (`sparse_attention_rope` with `o_rope`): each output row is rotated back in the
attention's last launch before it is written, so a decode step has no launch of 64 small
programs per layer for it.

The rule takes an inverse `rope` whose input is a sparse_attention's (or a
sparse_attention_rope's of the same RoPE) result used by nothing else, at the attention's
own positions. Runs after fuse_attn_q, whose op it extends (fuse_attn_q folds into a
plain sparse_attention only).
"""

from __future__ import annotations

import dataclasses

from v4c.ir.graph import Graph, Node
from v4c.ir.ops.attention import SparseAttentionRope
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import Rule, only_user, producer, replace, rewrite

NAME = "fuse_attn_o"
KINDS = ("sparse_attention", "sparse_attention_rope")


def o_rope(graph: Graph, rope: Node) -> bool:
    if rope.op.kind != "rope" or not rope.op.inverse:
        return False
    attn, index = producer(graph, rope, 0)
    if attn.op.kind not in KINDS or index != 0 or only_user(graph, attn.out(0)) is None:
        return False
    operands = graph.operands(attn.id)
    if graph.operands(rope.id)[1] != operands[2]:
        return False
    folded = SparseAttentionRope.of(attn.op, rope.op)
    same = (folded.rope_dim, folded.theta, folded.yarn) == (
        rope.op.rope_dim, rope.op.theta, rope.op.yarn,
    )  # fmt: skip
    if not same or folded.o_rope:
        return False
    op = dataclasses.replace(folded, o_rope=True)
    if attn.op.kind == "sparse_attention_rope":
        graph.replace_op(attn.id, op)
        replace(graph, [(rope.out(0), attn.out(0))], [rope])
        return True
    fused = graph.add(
        f"{attn.id}_rope", op, operands, layer=attn.layer, origin=(NAME, (attn.id, rope.id))
    )
    replace(graph, [(rope.out(0), fused.out(0))], [rope, attn])
    return True


RULES = [Rule("rope_inv(sparse_attention) -> sparse_attention_rope", o_rope)]


@register_pass(NAME)
def fuse_attn_o(graph: Graph, ctx: PassContext) -> PassResult:
    stats = rewrite(graph, RULES)
    return PassResult(any(stats.values()), stats)
