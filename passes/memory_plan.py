"""memory_plan: static buffers for every intermediate value, reused once dead.

For each entry point (`passes/entries.py`) every value a compute node it runs makes gets
an offset in one arena. A value lives from its producer to its last user; a view
(`aliases`) extends the life of what it views and takes no memory; values that alias a
cache live in the cache. Offsets are first-fit over the live buffers, 256-byte aligned.
The result (offsets and the peak) is stored in `graph.meta["memory_plan"]` for `lower`.
"""

from __future__ import annotations

from math import prod

from v4c.ir.graph import Graph, Value
from v4c.ir.types import DTYPE_BYTES
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.entries import entry_outputs

ALIGN = 256


def root_of(graph: Graph, value: Value) -> Value:
    """The value whose memory `value` uses (itself unless it is a view)."""
    while True:
        node = graph.node(value.node)
        if value.index not in node.op.aliases:
            return value
        value = graph.operands(node.id)[node.op.aliases[value.index]]


def lifetimes(graph: Graph, nodes: set[str] | None = None) -> dict[Value, tuple[int, int]]:
    """(first step, last step) of every arena value of `nodes` (default: all), in topological
    step numbers."""
    order = [id for id in graph.toposort() if nodes is None or id in nodes]
    step = {id: i for i, id in enumerate(order)}
    life: dict[Value, tuple[int, int]] = {}
    for id in order:
        node = graph.node(id)
        if node.op.source:
            continue
        for index in range(len(node.types)):
            if index not in node.op.aliases:
                life[Value(id, index)] = (step[id], step[id])
        for operand in graph.operands(id):
            root = root_of(graph, operand)
            if root in life:
                life[root] = (life[root][0], step[id])
    return life


def plan_entry(
    graph: Graph, env: dict[str, int], activations: str = "bf16", nodes: set[str] | None = None
) -> dict:
    """Offsets of one entry point running `nodes` (default: all); IR-bf16 values are held in
    `activations` (bf16 or fp32)."""
    life = lifetimes(graph, nodes)
    placed: list[tuple[int, int, int]] = []  # (offset, size, last step)
    buffers = {}
    for value, (first, last) in sorted(life.items(), key=lambda kv: (kv[1][0], kv[0])):
        t = graph.type_of(value)
        held = activations if t.dtype == "bf16" else t.dtype
        size = -(-prod(t.resolve(env)) * DTYPE_BYTES[held] // ALIGN) * ALIGN
        live = sorted((o, s) for o, s, end in placed if end >= first)
        offset = 0
        for o, s in live:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, last))
        buffers[str(value)] = [offset, size]
    peak = max((o + s for o, s, _ in placed), default=0)
    naive = sum(s for _, s, _ in placed)
    return {"env": env, "peak_bytes": peak, "unshared_bytes": naive, "buffers": buffers}


def entry_nodes(graph: Graph, outputs: dict[str, str]) -> set[str]:
    """The nodes an entry point returning graph outputs `outputs.values()` (as
    `graph_outputs` resolves them) runs."""
    ids = {n.op.key: n.id for n in graph.nodes() if n.op.kind == "output"}
    return graph.needed_by([ids[key] for key in outputs.values()])


def graph_outputs(graph: Graph, outputs: dict[str, str]) -> dict[str, str]:
    """An entry's outputs as the graph has them: a `last_<key>` that select_outputs did not
    make (a pipeline without it) is the whole `<key>`, every token."""
    keys = {n.op.key for n in graph.nodes() if n.op.kind == "output"}
    return {k: v if v in keys else v.removeprefix("last_") for k, v in outputs.items()}


@register_pass("memory_plan")
def memory_plan(graph: Graph, ctx: PassContext) -> PassResult:
    options = ctx.options
    plans = {
        entry: plan_entry(
            graph,
            options.env(entry),
            options.dtype,
            entry_nodes(graph, graph_outputs(graph, outputs)),
        )  # fmt: skip
        for entry, outputs in entry_outputs(options, ctx.spec).items()
    }
    graph.meta["memory_plan"] = plans
    stats = {f"{e}_peak_bytes": p["peak_bytes"] for e, p in plans.items()}
    stats["buffers"] = len(plans["decode"]["buffers"])
    return PassResult(False, stats)
