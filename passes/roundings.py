"""No pass may drop an official rounding (numerics: official, V4_REFERENCE §12).

`simulate_numerics` places the roundings as ops (`quant_sim`) and as switches on the ops
that round inside (`Op.rounding_attrs`: the experts' `act_quant`, the indexer's and the
compressors' `sim`, ...). A later pass that rebuilds such an op must carry the switch over,
or the plan silently computes plain numerics there (the bug of issue 11: `schedule_moe`
rebuilt the routed experts without `act_quant`). The pass manager takes a `snapshot` before
each pass and `check`s the graph after it:

- a node that stays keeps its roundings, and stays live if it was;
- a node that a pass replaced (named in the `origin` of the nodes made for it) hands its
  roundings on to those nodes, together;
- a node removed without a replacement must have been dead (nothing it rounded was used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from v4c.errors import IRError
from v4c.ir.graph import Graph

Rounding = tuple[str, Any]


@dataclass(frozen=True)
class Snapshot:
    roundings: dict[str, frozenset[Rounding]]  # node id -> its roundings (non-empty only)
    live: set[str]  # of those, the ones an output depends on


def live_nodes(graph: Graph) -> set[str]:
    """The nodes an output (or another side effect) depends on."""
    stack = [id for id in graph.ids() if graph.node(id).op.side_effects]
    live = set(stack)
    while stack:
        for value in graph.operands(stack.pop()):
            if value.node not in live:
                live.add(value.node)
                stack.append(value.node)
    return live


def snapshot(graph: Graph) -> Snapshot:
    roundings = {id: graph.node(id).op.roundings() for id in graph.ids()}
    roundings = {id: r for id, r in roundings.items() if r}
    return Snapshot(roundings, live_nodes(graph) & roundings.keys())


def check(before: Snapshot, graph: Graph, pass_name: str) -> None:
    """Raise IRError naming the first rounding pass `pass_name` dropped, and its node."""
    heirs: dict[str, set[Rounding]] = {}  # replaced id -> roundings of the nodes made for it
    for node in map(graph.node, graph.ids()):
        made_here = node.origin is not None and node.origin[0] == pass_name
        for old in node.origin[1] if made_here else ():
            heirs.setdefault(old, set()).update(node.op.roundings())
    live = live_nodes(graph)
    for id, had in sorted(before.roundings.items()):
        was_live = id in before.live
        if id in graph and id not in heirs:
            kept = graph.node(id).op.roundings() if id in live or not was_live else frozenset()
        elif id in heirs:
            kept = frozenset(heirs[id]) | (graph.node(id).op.roundings() if id in graph else set())
        else:
            kept = frozenset() if was_live else had
        lost = had - kept
        if lost:
            what = ", ".join(f"{name}={value!r}" for name, value in sorted(lost, key=str))
            raise IRError(f"dropped the official rounding {what} of {id}")
