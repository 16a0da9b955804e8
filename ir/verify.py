"""The verifier: run after building and after every pass.

Checks: the graph is acyclic; every node has exactly the operands its op declares, each a
real result of its producer; the stored result types are what the op's type rule infers;
inputs, states and outputs have unique keys; and, given the spec, every checkpoint tensor
the spec implies is bound by exactly one `param` node with the implied shape (of the piece
it holds, for a param split over ranks) and dtype.
"""

from __future__ import annotations

from collections import Counter

from v4c.errors import IRError
from v4c.ir.graph import Graph, Node
from v4c.spec import ModelSpec
from v4c.spec.parallel import local_shape
from v4c.spec.tensors import checkpoint_tensors, main_head_tensors


def verify(graph: Graph, spec: ModelSpec | None = None) -> None:
    """Raise IRError listing every problem found."""
    if not graph.is_acyclic():
        raise IRError("verify: the graph has a cycle")
    problems: list[str] = []
    keys: Counter[tuple[str, str]] = Counter()
    nodes = graph.nodes()  # one topological sort: problems are listed in graph order
    for node in nodes:
        problems += _check_node(graph, node.id)
        op = node.op
        if op.kind in ("input", "state", "output"):
            keys[(op.kind, op.key)] += 1
    problems += [f"{kind} key {key!r} used {n} times" for (kind, key), n in keys.items() if n > 1]
    if spec is not None:
        problems += _check_params(nodes, spec)
    if problems:
        raise IRError("verify: " + "\n  ".join(problems))


def _check_node(graph: Graph, id: str) -> list[str]:
    node = graph.node(id)
    try:
        operands = graph.operands(id)
        roles = node.op.operand_roles()
        if len(operands) != len(roles):
            return [
                f"{id}: {node.op.kind} takes {len(roles)} operands {roles}, has {len(operands)}"
            ]
        inferred = tuple(node.op.infer([graph.type_of(v) for v in operands]))
    except IRError as err:
        return [f"{id}: {err}"]
    if inferred != node.types:
        shown = ", ".join(map(str, inferred))
        return [f"{id}: types {', '.join(map(str, node.types))} but {node.op.kind} infers {shown}"]
    return []


def _check_params(nodes: list[Node], spec: ModelSpec) -> list[str]:
    """Every implied tensor bound once; the MTP block's only while an MTP output is kept,
    the main head's only while the logits are."""
    keys = [n.op.key for n in nodes if n.op.kind == "output"]
    with_mtp = any("mtp" in key for key in keys)
    main_logits = {"logits", "last_logits"} & set(keys)
    head = set() if main_logits else {t.name for t in main_head_tensors(spec)}
    expected = {t.name: t for t in checkpoint_tensors(spec)}
    required = [n for n in expected if (with_mtp or not n.startswith("mtp.")) and n not in head]
    bound: Counter[str] = Counter()
    problems = []
    for node in nodes:
        if node.op.kind != "param":
            continue
        name = node.op.tensor
        bound[name] += 1
        t = expected.get(name)
        if t is None:
            problems.append(f"{node.id}: binds {name!r}, which the spec does not imply")
            continue
        shape = local_shape(((t.stack,) if t.stack else ()) + t.shape, node.op.split)
        if (tuple(node.op.shape), node.op.dtype, node.op.stack) != (shape, t.dtype, t.stack):
            piece = f" (its piece {list(node.op.split)})" if node.op.split else ""
            problems.append(
                f"{node.id}: {name} is {list(node.op.shape)} {node.op.dtype}, the spec implies "
                f"{list(shape)} {t.dtype}{piece}"
            )
    problems += [f"checkpoint tensor {n!r} bound {c} times" for n, c in bound.items() if c > 1]
    problems += [f"checkpoint tensor {n!r} is not bound" for n in required if n not in bound]
    return problems
