"""lower: the optimised graph becomes a `Plan`, one ordered list of launches per entry point,
each naming its template, constants and buffers (from `memory_plan`).

Every compute op is one launch of the template named after the op (kind `kernel`; every
dense GEMM is one of the GEMM family, `codegen/ops/gemm.py`), except views (kind `view`: no
kernel, the program makes the view once when it binds), the small ops of a rank's piece of
a split computation (kind `library`, call `torch`: their reference semantics), and
collectives (kind `collective`: the rank's communicator). The format of every weight
(`WeightFormat`) is decided here, once: a weight the checkpoint stores FP8/FP4 stays so
(`weights="as-stored"`) when every op that reads it has a kernel that reads that format
(`Op.quantised_operands`), else it is widened to its logical dtype at load. The plan is
stored in `graph.meta["plan"]`; the graph itself is unchanged.
"""

from __future__ import annotations

from dataclasses import asdict

import v4c.ir.ops  # noqa: F401  (registers every op)
from v4c.ir.graph import Graph, Node, Value
from v4c.ir.op import OPS
from v4c.ir.plan import EntryPlan, Launch, LaunchKind, Plan, Ref
from v4c.ir.weights import PlanWeight, WeightFormat, stored_format
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.passes.entries import entry_outputs
from v4c.passes.memory_plan import entry_nodes, graph_outputs, root_of
from v4c.spec import ModelSpec
from v4c.spec.tensors import checkpoint_tensors

VIEWS = {"split_heads", "take_last"}
LIBRARY = {
    "masked_embed": "torch",
    "indexer_score": "torch",
    "indexer_select": "torch",
}


def launch_kind(op: str) -> tuple[LaunchKind, str]:
    """(kind, kernel) of a launch computing `op`."""
    if op in VIEWS:
        return "view", op
    if op in LIBRARY:
        return "library", LIBRARY[op]
    if OPS[op].collective:
        return "collective", op
    return "kernel", op


def storage_formats(graph: Graph, spec: ModelSpec, weights: str) -> dict[str, WeightFormat]:
    """Checkpoint tensor -> the format the program holds it in: dense in its IR dtype, or
    as stored (FP8 with the spec's scale block, FP4 with its expert block)."""
    stored = {
        t.name: stored_format(t.storage, t.dtype, spec.quant) for t in checkpoint_tensors(spec)
    }
    formats: dict[str, WeightFormat] = {}
    readable: dict[str, bool] = {}
    for node in graph.nodes():
        if node.op.source == "param":
            formats[node.op.tensor] = WeightFormat.dense(node.types[0].dtype)
            continue
        roles = node.op.operand_roles()
        for role, value in zip(roles, graph.operands(node.id)):
            source = graph.node(root_of(graph, value).node).op
            if source.source == "param":
                ok = role in node.op.quantised_operands
                readable[source.tensor] = readable.get(source.tensor, True) and ok
    if weights == "as-stored":
        for name, ok in readable.items():
            if ok and name in stored and stored[name].quantised:
                formats[name] = stored[name]
    return formats


def _ref(graph: Graph, value: Value, env: dict, buffers: dict, formats: dict) -> Ref:
    t = graph.type_of(value)
    shape = t.resolve(env)
    root = root_of(graph, value)
    node = graph.node(root.node)
    source = node.op.source
    if source == "param":
        return Ref("param", node.op.tensor, shape, t.dtype, 0, t.shape, formats[node.op.tensor])
    if source in ("state", "input"):
        return Ref(source, node.op.key, shape, t.dtype, 0, t.shape)
    offset, _ = buffers[str(root)]
    kind = "view" if root != value else "arena"
    return Ref(kind, str(value), shape, t.dtype, offset, t.shape)


def _launch(graph: Graph, node: Node, env: dict, buffers: dict, formats: dict) -> Launch:
    def ref(value: Value) -> Ref:
        return _ref(graph, value, env, buffers, formats)

    inputs = tuple(ref(v) for v in graph.operands(node.id))
    outputs = tuple(ref(node.out(i)) for i in range(len(node.types)))
    fuses = node.origin[1] if node.origin else (node.id,)
    kind, kernel = launch_kind(node.op.kind)
    constants = node.op.attrs()
    return Launch(kind, kernel, node.id, node.op.kind, tuple(fuses), constants, inputs, outputs)


def lower_graph(graph: Graph, ctx: PassContext) -> Plan:
    memory = graph.meta["memory_plan"]
    formats = storage_formats(graph, ctx.spec, ctx.options.weights)
    entries = {}
    for entry, outputs in entry_outputs(ctx.options, ctx.spec).items():
        env, buffers = memory[entry]["env"], memory[entry]["buffers"]
        plan = EntryPlan(env, memory[entry]["peak_bytes"])
        outputs = graph_outputs(graph, outputs)
        runs = entry_nodes(graph, outputs)
        returned = {graph_key: key for key, graph_key in outputs.items()}
        for node in graph.nodes():
            if node.id not in runs:
                continue
            if node.op.kind == "output":
                value = graph.operands(node.id)[0]
                ref = _ref(graph, value, env, buffers, formats)
                plan.outputs[returned[node.op.key]] = ref
            elif not node.op.source:
                plan.launches.append(_launch(graph, node, env, buffers, formats))
        entries[entry] = plan
    params, states = {}, {}
    for node in graph.nodes():
        t = node.types[0] if node.types else None
        if node.op.source == "param":
            params[node.op.tensor] = PlanWeight(
                tuple(t.shape), t.dtype, formats[node.op.tensor], node.op.stack, node.op.split
            )
        elif node.op.source == "state":
            states[node.op.key] = {"shape": list(t.shape), "dtype": t.dtype, "fill": node.op.fill}
    model = ctx.spec.model_dump(mode="json")
    return Plan(ctx.spec.name, asdict(ctx.options), params, states, entries, model)


@register_pass("lower", requires=("memory_plan",))
def lower(graph: Graph, ctx: PassContext) -> PassResult:
    plan = lower_graph(graph, ctx)
    graph.meta["plan"] = plan
    return PassResult(False, {e: len(p.launches) for e, p in plan.entries.items()})
