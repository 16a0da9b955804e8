"""`Graph`: the IR, a thin wrapper over `networkx.MultiDiGraph`, and the only module that
touches networkx. Passes use `add`, `replace_uses`, `erase`, `operands`, `users`, `toposort`.

A node is one op under the key "op" (a frozen dataclass), its result types, its layer and,
for nodes a pass made, its origin (pass name, ids replaced). An edge producer -> consumer
has key = operand index and attribute `out` = the producer's result index, so `x * x` is
two edges and multi-result ops (hc_pre -> x, post, comb) are addressed by index.
Node ids are readable and stable (`L03.attn.wq_a`); nothing is numbered by a counter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import networkx as nx

from v4c.errors import IRError
from v4c.ir.op import Op
from v4c.ir.types import TensorType


@dataclass(frozen=True, order=True)
class Value:
    """Result `index` of node `node`."""

    node: str
    index: int = 0

    def __str__(self) -> str:
        return f"%{self.node}" + (f":{self.index}" if self.index else "")


@dataclass(frozen=True)
class Node:
    id: str
    op: Op
    types: tuple[TensorType, ...]
    layer: int | None = None
    origin: tuple[str, tuple[str, ...]] | None = None  # (pass, replaced node ids)

    def out(self, index: int = 0) -> Value:
        return Value(self.id, index)


class Graph:
    def __init__(self, name: str = "model") -> None:
        self._g = nx.MultiDiGraph()
        self.name = name
        self.meta: dict[str, object] = {}
        self._order: list[str] | None = None  # the topological order, until an edge changes

    # -- building ----------------------------------------------------------------------

    def add(
        self,
        id: str,
        op: Op,
        operands: list[Value],
        types: tuple[TensorType, ...] | None = None,
        *,
        layer: int | None = None,
        origin: tuple[str, tuple[str, ...]] | None = None,
    ) -> Node:
        """Add a node; its types are inferred from its operands unless given (parser)."""
        if id in self._g:
            raise IRError(f"node {id!r} exists")
        for value in operands:
            if value.node not in self._g:
                raise IRError(f"{id}: operand {value} is not a node")
        if types is None:
            types = op.infer([self.type_of(v) for v in operands])
        node = Node(id, op, tuple(types), layer, origin)
        self._order = None
        self._g.add_node(id, node=node)
        for index, value in enumerate(operands):
            self._g.add_edge(value.node, id, key=index, out=value.index)
        return node

    def replace_uses(self, old: Value, new: Value, *, only: set[str] | None = None) -> int:
        """Make every user of `old` (or those in `only`) use `new`; returns the count."""
        changed = 0
        self._order = None
        for user, index, out in list(self.users(old.node)):
            if out != old.index or (only is not None and user not in only):
                continue
            self._g.remove_edge(old.node, user, key=index)
            self._g.add_edge(new.node, user, key=index, out=new.index)
            changed += 1
        return changed

    def set_op(self, id: str, op: Op) -> Node:
        """Give node `id` another op of the same kind and result types (new attributes)."""
        node = self.node(id)
        types = tuple(op.infer([self.type_of(v) for v in self.operands(id)]))
        if op.kind != node.op.kind or types != node.types:
            raise IRError(
                f"set_op {id}: {op.kind} {types} does not replace {node.op.kind} {node.types}"
            )
        node = replace(node, op=op)
        self._g.nodes[id]["node"] = node
        return node

    def replace_op(self, id: str, op: Op, operands: list[Value] | None = None) -> Node:
        """Give node `id` another op (of any kind) and, if given, other operands; its users
        keep reading it, its types are inferred again (callers retype the users)."""
        operands = self.operands(id) if operands is None else operands
        types = tuple(op.infer([self.type_of(v) for v in operands]))
        self._order = None
        for u, _, key in list(self._g.in_edges(id, keys=True)):
            self._g.remove_edge(u, id, key=key)
        for index, value in enumerate(operands):
            self._g.add_edge(value.node, id, key=index, out=value.index)
        node = replace(self.node(id), op=op, types=types)
        self._g.nodes[id]["node"] = node
        return node

    def retype(self, id: str) -> Node:
        """Infer `id`'s result types again after its operands changed shape."""
        node = self.node(id)
        types = tuple(node.op.infer([self.type_of(v) for v in self.operands(id)]))
        node = replace(node, types=types)
        self._g.nodes[id]["node"] = node
        return node

    def erase(self, id: str) -> None:
        if any(True for _ in self.users(id)):
            raise IRError(f"cannot erase {id}: it still has users")
        self._order = None
        self._g.remove_node(id)

    # -- reading -----------------------------------------------------------------------

    def __contains__(self, id: str) -> bool:
        return id in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def node(self, id: str) -> Node:
        try:
            return self._g.nodes[id]["node"]
        except KeyError:
            raise IRError(f"no node {id!r}") from None

    def type_of(self, value: Value) -> TensorType:
        types = self.node(value.node).types
        if not 0 <= value.index < len(types):
            raise IRError(f"{value}: {value.node} has {len(types)} results")
        return types[value.index]

    def operands(self, id: str) -> list[Value]:
        edges = sorted(
            (key, u, data["out"]) for u, _, key, data in self._g.in_edges(id, keys=True, data=True)
        )
        if [key for key, _, _ in edges] != list(range(len(edges))):
            raise IRError(f"{id}: operand indices {[k for k, _, _ in edges]} are not dense")
        return [Value(u, out) for _, u, out in edges]

    def users(self, id: str) -> Iterator[tuple[str, int, int]]:
        """(user id, operand index, result index) for every use of a result of `id`."""
        for _, user, key, data in self._g.out_edges(id, keys=True, data=True):
            yield user, key, data["out"]

    def toposort(self) -> list[str]:
        """Topological order, ties broken by node id: stable across runs and processes.
        Computed once per graph structure (passes ask for it often; it is the slowest query)."""
        if self._order is None:
            try:
                self._order = list(nx.lexicographical_topological_sort(self._g))
            except nx.NetworkXUnfeasible:
                raise IRError("the graph has a cycle") from None
        return list(self._order)

    def nodes(self) -> list[Node]:
        return [self.node(id) for id in self.toposort()]

    def needed_by(self, ids: list[str]) -> set[str]:
        """`ids` and every node they depend on: what an entry point with these outputs runs."""
        needed = set(ids)
        for id in ids:
            needed |= nx.ancestors(self._g, id)
        return needed

    def ids(self) -> Iterator[str]:
        """Every node id, in no particular order: for whole-graph checks that need no order."""
        return iter(self._g.nodes)

    def is_acyclic(self) -> bool:
        return nx.is_directed_acyclic_graph(self._g)

    def copy(self) -> Graph:
        out = Graph(self.name)
        out._g = self._g.copy()
        out.meta = dict(self.meta)
        return out
