"""lower: the optimised graph becomes a `Plan`, one ordered list of kernel launches per
entry point, each naming its template, constants and buffers (from `memory_plan`).

Every compute op is one launch of the template named after the op, except views (a launch
of kind `view:<op>`, no kernel: the backend makes the view) and dense GEMMs (`linear`),
which are left to torch/cuBLAS. The plan is stored in
`graph.meta["plan"]`; the graph itself is unchanged.
"""

from __future__ import annotations

from dataclasses import asdict

from v4c.ir.graph import Graph, Node, Value
from v4c.ir.plan import EntryPlan, Launch, Plan, Ref
from v4c.passes.base import ENTRIES, PassContext, PassResult, register_pass
from v4c.passes.memory_plan import root_of

VIEWS = {"split_heads", "take_last"}
LIBRARY = {"linear": "library:torch.matmul"}


def template_of(kind: str) -> str:
    return f"view:{kind}" if kind in VIEWS else LIBRARY.get(kind, kind)


def _ref(graph: Graph, value: Value, env: dict, buffers: dict) -> Ref:
    t = graph.type_of(value)
    shape = t.resolve(env)
    root = root_of(graph, value)
    node = graph.node(root.node)
    source = node.op.source
    if source == "param":
        return Ref("param", node.op.tensor, shape, t.dtype)
    if source in ("state", "input"):
        return Ref(source, node.op.key, shape, t.dtype)
    offset, _ = buffers[str(root)]
    return Ref("view" if root != value else "arena", str(value), shape, t.dtype, offset)


def _launch(graph: Graph, node: Node, env: dict, buffers: dict) -> Launch:
    inputs = tuple(_ref(graph, v, env, buffers) for v in graph.operands(node.id))
    outputs = tuple(_ref(graph, node.out(i), env, buffers) for i in range(len(node.types)))
    fuses = node.origin[1] if node.origin else (node.id,)
    constants = node.op.attrs()
    return Launch(
        template_of(node.op.kind), node.id, node.op.kind, tuple(fuses), constants, inputs, outputs
    )


def lower_graph(graph: Graph, ctx: PassContext) -> Plan:
    memory = graph.meta["memory_plan"]
    entries = {}
    for entry in ENTRIES:
        env, buffers = memory[entry]["env"], memory[entry]["buffers"]
        plan = EntryPlan(env, memory[entry]["peak_bytes"])
        for node in graph.nodes():
            if node.op.kind == "output":
                value = graph.operands(node.id)[0]
                plan.outputs[node.op.key] = _ref(graph, value, env, buffers)
            elif not node.op.source:
                plan.launches.append(_launch(graph, node, env, buffers))
        entries[entry] = plan
    params, states = {}, {}
    for node in graph.nodes():
        t = node.types[0] if node.types else None
        if node.op.source == "param":
            params[node.op.tensor] = {
                "shape": list(t.shape),
                "dtype": t.dtype,
                "stack": node.op.stack,
            }
        elif node.op.source == "state":
            states[node.op.key] = {"shape": list(t.shape), "dtype": t.dtype, "fill": node.op.fill}
    return Plan(ctx.spec.name, asdict(ctx.options), params, states, entries)


@register_pass("lower", requires=("memory_plan",))
def lower(graph: Graph, ctx: PassContext) -> PassResult:
    plan = lower_graph(graph, ctx)
    graph.meta["plan"] = plan
    return PassResult(False, {e: len(p.launches) for e, p in plan.entries.items()})
