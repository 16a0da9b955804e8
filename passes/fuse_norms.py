"""fuse_norms: the q latent's RMSNorm and the kv RMSNorm + RoPE of an attention layer become
one op (`qkv_norm`), so a decode step launches one small kernel for both instead of two.

The rule pairs a weighted `rms_norm_rope` with a weighted `rms_norm` when each reads a
`linear` of the same activation: neither norm's result can then feed the other's input, so
the pair is schedulable at once (after both projections). Runs after fuse_rope, which makes
the `rms_norm_rope`.
"""

from __future__ import annotations

from v4c.ir.graph import Graph, Node
from v4c.ir.ops.norm import QkvNorm
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import Rule, producer, replace, rewrite

NAME = "fuse_norms"


def _projection(graph: Graph, norm: Node) -> Node | None:
    """The `linear` whose result is `norm`'s input, if it is one."""
    proj, index = producer(graph, norm, 0)
    return proj if proj.op.kind == "linear" and index == 0 else None


def _sibling_norm(graph: Graph, kv_proj: Node) -> Node | None:
    """The first (by id) weighted rms_norm of another linear of kv_proj's activation."""
    x = graph.operands(kv_proj.id)[0]
    found = []
    for user, operand, out in graph.users(x.node):
        if out != x.index or operand != 0 or user == kv_proj.id:
            continue
        proj = graph.node(user)
        if proj.op.kind != "linear":
            continue
        for norm_id, slot, _ in graph.users(proj.id):
            norm = graph.node(norm_id)
            if slot == 0 and norm.op.kind == "rms_norm" and norm.op.weighted:
                found.append(norm)
    return min(found, key=lambda n: n.id) if found else None


def qkv_norm(graph: Graph, kv: Node) -> bool:
    if kv.op.kind != "rms_norm_rope" or not kv.op.weighted or kv.op.inline:
        return False
    kv_proj = _projection(graph, kv)
    q = _sibling_norm(graph, kv_proj) if kv_proj is not None else None
    if q is None:
        return False
    op = QkvNorm(kv.op.rope_dim, kv.op.theta, kv.op.yarn, q_eps=q.op.eps, kv_eps=kv.op.eps)
    q_in, q_weight = graph.operands(q.id)
    kv_in, positions, kv_weight = graph.operands(kv.id)
    fused = graph.add(
        f"{kv.id.rsplit('.', 1)[0]}.qkv_norm",
        op,
        [q_in, kv_in, positions, q_weight, kv_weight],
        layer=kv.layer,
        origin=(NAME, (q.id, kv.id)),
    )
    replace(graph, [(q.out(0), fused.out(0)), (kv.out(0), fused.out(1))], [q, kv])
    return True


RULES = [Rule("rms_norm + rms_norm_rope of one activation's projections -> qkv_norm", qkv_norm)]


@register_pass(NAME)
def fuse_norms(graph: Graph, ctx: PassContext) -> PassResult:
    stats = rewrite(graph, RULES)
    return PassResult(any(stats.values()), stats)
