"""select_outputs: keep the outputs the plan is for, and compute logits only where needed.

The builder makes every output of the model (logits and, per MTP block, mtp_logits). A
plain generation plan needs the logits alone, and only at the last token of each row: the
lm_head is a [D, V] GEMM per token, the largest one in the model. Outputs not asked for are
dropped (dce then removes what only they used); with `logits="last"` a take_last is put in
front of every lm_head.
"""

from __future__ import annotations

from v4c.errors import IRError
from v4c.ir.graph import Graph
from v4c.ir.ops.core import TakeLast
from v4c.passes.base import PassContext, PassResult, register_pass

NAME = "select_outputs"


@register_pass(NAME)
def select_outputs(graph: Graph, ctx: PassContext) -> PassResult:
    wanted = set(ctx.options.outputs)
    outputs = {n.op.key: n for n in graph.nodes() if n.op.kind == "output"}
    if not wanted <= set(outputs):
        raise IRError(
            f"unknown output(s) {sorted(wanted - set(outputs))}; the graph has {sorted(outputs)}"
        )
    dropped = 0
    for key, node in outputs.items():
        if key not in wanted:
            graph.erase(node.id)
            dropped += 1
    narrowed = 0
    if ctx.options.logits == "last":
        for node in graph.nodes():
            if node.op.kind == "linear" and node.id.endswith(".lm_head"):
                y = graph.operands(node.id)[0]
                last = graph.add(
                    f"{node.id}_last", TakeLast(), [y], layer=node.layer, origin=(NAME, (node.id,))
                )
                graph.replace_uses(y, last.out(0), only={node.id})
                graph.retype(node.id)  # its result is [B,1,V] now
                narrowed += 1
    return PassResult(
        bool(dropped or narrowed), {"outputs_dropped": dropped, "lm_heads_narrowed": narrowed}
    )
