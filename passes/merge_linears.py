"""merge_linears: the `linear`s that read one value become one `merged_linear`, one launch of
the GEMM family over all their tiles, so a decode step pays one launch where it paid one per
projection, and a thin projection's few tiles share the SMs with its siblings'.

In an attention layer the normed input feeds wq_a, wkv, the compressor's wkv and wgate, the
indexer's compressor's and its weights_proj (7 in a CSA layer, 4 in an HCA one, 2 with the
window only), and the q latent feeds wq_b and the indexer's wq_b. Each part keeps its weight
as stored (FP8 or bf16, each with its own kernel mode), its `out_dtype`, its `act_quant` and
its own result value, so no consumer changes, and the kernel reduces each part as its own
launch did (the reduction fixed by its K and N): bitwise the same outputs.

Runs after every pass that matches a `linear` by its kind (fuse_norms finds the q and kv
norms through their projections); the MoE gate's projection has no `linear` sibling (the
shared expert reads the same x through its own `swiglu`) and stays as it is.
"""

from __future__ import annotations

from v4c.ir.graph import Graph, Node, Value
from v4c.ir.ops.gemm import MergedLinear
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.rewrite import replace

NAME = "merge_linears"


def sibling_linears(graph: Graph) -> dict[Value, list[Node]]:
    """Each value that two or more `linear`s read as their x -> those linears, by id."""
    readers: dict[Value, list[Node]] = {}
    for node in graph.nodes():
        if node.op.kind == "linear":
            readers.setdefault(graph.operands(node.id)[0], []).append(node)
    return {x: sorted(nodes, key=lambda n: n.id) for x, nodes in readers.items() if len(nodes) > 1}


def merge(graph: Graph, x: Value, parts: list[Node]) -> Node:
    """One merged_linear computing `parts` (linears of x), their results rewired to it."""
    op = MergedLinear(
        tuple(p.op.out_dtype for p in parts),
        tuple(p.op.act_quant for p in parts),
        tuple(p.op.role for p in parts),
    )
    weights = [graph.operands(p.id)[1] for p in parts]
    name = f"{x.node}.linears" if x.index == 0 else f"{x.node}.{x.index}.linears"
    merged = graph.add(
        name, op, [x, *weights], layer=parts[0].layer, origin=(NAME, tuple(p.id for p in parts))
    )
    replace(graph, [(p.out(0), merged.out(i)) for i, p in enumerate(parts)], parts)
    return merged


@register_pass(NAME)
def merge_linears(graph: Graph, ctx: PassContext) -> PassResult:
    groups = sibling_linears(graph)
    for x, parts in groups.items():
        merge(graph, x, parts)
    merged = sum(len(parts) for parts in groups.values())
    return PassResult(bool(groups), {"launches": len(groups), "linears merged": merged})
