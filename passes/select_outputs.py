"""select_outputs: keep the outputs the plan's entry points return, and compute logits only
where they are needed.

The builder makes every output of the model (the main logits and last-block streams
`hidden`; the MTP block's `mtp_logits` and `mtp_hidden`). The entry table
(`passes/entries.py`) names the ones a plan returns; a `last_<key>` is `<key>` at the last
token of each row. For logits the take_last goes in front of the lm_head, a [D, V] GEMM per
token and the largest in the model: the lm_head is narrowed in place, or, when another entry
(verify) also needs every token's logits, a second lm_head on the last tokens is added.
Outputs no entry returns are dropped (dce then removes what only they used).
"""

from __future__ import annotations

from v4c.errors import IRError
from v4c.ir.graph import Graph, Node
from v4c.ir.ops.core import Output, TakeLast
from v4c.ir.roles import Projection
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.entries import entry_outputs

NAME = "select_outputs"
LAST = "last_"


@register_pass(NAME)
def select_outputs(graph: Graph, ctx: PassContext) -> PassResult:
    wanted = {
        key for keys in entry_outputs(ctx.options, ctx.spec).values() for key in keys.values()
    }
    outputs = {n.op.key: n for n in graph.nodes() if n.op.kind == "output"}
    unknown = {key.removeprefix(LAST) for key in wanted} - set(outputs)
    if unknown:
        raise IRError(f"unknown output(s) {sorted(unknown)}; the graph has {sorted(outputs)}")
    narrowed = 0
    for key in sorted(k for k in wanted if k.startswith(LAST)):
        whole = outputs[key.removeprefix(LAST)]
        _last(graph, whole, key, keep_whole=whole.op.key in wanted)
        narrowed += 1
    dropped = 0
    for key, node in outputs.items():
        if key not in wanted:
            graph.erase(node.id)
            dropped += 1
    return PassResult(bool(dropped or narrowed), {"outputs_dropped": dropped, "narrowed": narrowed})


def _last(graph: Graph, whole: Node, key: str, keep_whole: bool) -> None:
    """Add output `key`: the value of output `whole` at the last token of each row."""
    value = graph.operands(whole.id)[0]
    origin = (NAME, (whole.id,))
    producer = graph.node(value.node)
    if producer.op.kind == "linear" and producer.op.role == Projection.LM_HEAD:
        y, weight = graph.operands(producer.id)
        last = graph.add(
            f"{producer.id}_last", TakeLast(), [y], layer=producer.layer, origin=origin
        )
        if keep_whole:  # verify needs every token's logits: a second head on the last tokens
            head = graph.add(
                f"{producer.id}_on_last", producer.op, [last.out(), weight],
                layer=producer.layer, origin=origin,
            )  # fmt: skip
            value = head.out()
        else:
            graph.replace_uses(y, last.out(), only={producer.id})
            graph.retype(producer.id)  # its result is [B,1,V] now
    else:
        value = graph.add(f"{value.node}_last", TakeLast(), [value], origin=origin).out()
    graph.add(f"out.{key}", Output(key=key), [value])
