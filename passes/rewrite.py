"""Named rewrite rules applied to a fixpoint, and the graph queries fusions need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from v4c.errors import IRError
from v4c.ir.graph import Graph, Node, Value

MAX_ROUNDS = 64


@dataclass(frozen=True)
class Rule:
    """`apply(graph, node)` rewrites around `node` and returns True, or returns False."""

    name: str
    apply: Callable[[Graph, Node], bool]


def rewrite(graph: Graph, rules: list[Rule]) -> dict[str, int]:
    """Apply `rules` to every node until none applies; returns how often each fired."""
    counts = {rule.name: 0 for rule in rules}
    for _ in range(MAX_ROUNDS):
        fired = False
        for id in graph.toposort():
            for rule in rules:
                if id in graph and rule.apply(graph, graph.node(id)):
                    counts[rule.name] += 1
                    fired = True
        if not fired:
            return counts
    raise IRError(
        f"rules {[r.name for r in rules]} did not reach a fixpoint in {MAX_ROUNDS} rounds"
    )


def producer(graph: Graph, node: Node, operand: int) -> tuple[Node, int]:
    """The node (and result index) that feeds `node`'s operand `operand`."""
    value = graph.operands(node.id)[operand]
    return graph.node(value.node), value.index


def only_user(graph: Graph, value: Value) -> Node | None:
    """The single node that uses `value`, if exactly one does."""
    users = [user for user, _, out in graph.users(value.node) if out == value.index]
    return graph.node(users[0]) if len(users) == 1 else None


def replace(graph: Graph, old: list[tuple[Value, Value]], erase: list[Node]) -> None:
    """Rewire each (old -> new) value, then erase the replaced nodes (users first)."""
    for before, after in old:
        graph.replace_uses(before, after)
    for node in erase:
        graph.erase(node.id)
