"""fuse_hc_norm: the HC post of one sublayer, the HC pre of the next and the RMSNorm after
it become one op, so the 4-stream residual is read and written once per sublayer boundary.

Rules, in the order they are tried at each node:
- `norm(hc_pre(hc_post(...)))` -> hc_post_pre_norm   (attention -> FFN, FFN -> next layer)
- `norm(hc_head(hc_post(...)))` -> hc_post_head_norm (the last sublayer -> the final norm)
- `norm(hc_pre(X))`             -> hc_pre_norm       (the first sublayer, after hc_expand)
A fused op keeps every result another node still needs (the streams go on to the next
residual and, after the last layer, to the MTP block).
"""

from __future__ import annotations

from v4c.ir.graph import Graph, Node
from v4c.ir.ops.hc import HcPostHeadNorm, HcPostPreNorm, HcPreNorm
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import Rule, only_user, producer, replace, rewrite

NAME = "fuse_hc_norm"


def _norm_after(graph: Graph, node: Node) -> Node | None:
    """The weighted RMSNorm that is the only user of `node`'s first result."""
    norm = only_user(graph, node.out(0))
    ok = norm is not None and norm.op.kind == "rms_norm" and norm.op.weighted
    return norm if ok else None


def _fused_id(node: Node) -> str:
    return node.id.rsplit(".", 1)[0] + ".hc_fused"


def _post_then(graph: Graph, node: Node, kind: str) -> tuple[Node, Node] | None:
    """(hc_post feeding `node`, the norm after `node`) when `node` is a `kind` that fits."""
    if node.op.kind != kind:
        return None
    post, index = producer(graph, node, 0)
    norm = _norm_after(graph, node)
    if post.op.kind != "hc_post" or index != 0 or norm is None:
        return None
    return post, norm


def post_pre_norm(graph: Graph, pre: Node) -> bool:
    found = _post_then(graph, pre, "hc_pre")
    if found is None:
        return False
    post, norm = found
    op = HcPostPreNorm(pre.op.iters, pre.op.eps, pre.op.norm_eps, norm.op.eps)
    operands = graph.operands(post.id) + graph.operands(pre.id)[1:] + graph.operands(norm.id)[1:]
    fused = graph.add(
        _fused_id(pre), op, operands, layer=pre.layer, origin=(NAME, (post.id, pre.id, norm.id))
    )
    pairs = [
        (post.out(0), fused.out(0)),
        (norm.out(0), fused.out(1)),
        (pre.out(1), fused.out(2)),
        (pre.out(2), fused.out(3)),
    ]
    replace(graph, pairs, [norm, pre, post])
    return True


def post_head_norm(graph: Graph, head: Node) -> bool:
    found = _post_then(graph, head, "hc_head")
    if found is None:
        return False
    post, norm = found
    op = HcPostHeadNorm(eps=head.op.eps, norm_eps=head.op.norm_eps, rms_eps=norm.op.eps)
    operands = graph.operands(post.id) + graph.operands(head.id)[1:] + graph.operands(norm.id)[1:]
    fused = graph.add(
        _fused_id(head), op, operands, layer=head.layer, origin=(NAME, (post.id, head.id, norm.id))
    )
    replace(graph, [(post.out(0), fused.out(0)), (norm.out(0), fused.out(1))], [norm, head, post])
    return True


def pre_norm(graph: Graph, pre: Node) -> bool:
    norm = _norm_after(graph, pre) if pre.op.kind == "hc_pre" else None
    if norm is None:
        return False
    op = HcPreNorm(pre.op.iters, pre.op.eps, pre.op.norm_eps, norm.op.eps)
    operands = graph.operands(pre.id) + graph.operands(norm.id)[1:]
    fused = graph.add(
        _fused_id(pre), op, operands, layer=pre.layer, origin=(NAME, (pre.id, norm.id))
    )
    replace(
        graph,
        [(norm.out(0), fused.out(0)), (pre.out(1), fused.out(1)), (pre.out(2), fused.out(2))],
        [norm, pre],
    )
    return True


RULES = [
    Rule("rms_norm(hc_pre(hc_post)) -> hc_post_pre_norm", post_pre_norm),
    Rule("rms_norm(hc_head(hc_post)) -> hc_post_head_norm", post_head_norm),
    Rule("rms_norm(hc_pre) -> hc_pre_norm", pre_norm),
]


@register_pass(NAME)
def fuse_hc_norm(graph: Graph, ctx: PassContext) -> PassResult:
    stats = rewrite(graph, RULES)
    return PassResult(any(stats.values()), stats)
