"""The stable text form of a graph, one line per node, and its parser.

    %L03.attn.wq_a = linear(%L03.attn_norm, %w.layers.3.attn.wq_a.weight)
        {layer=3, out_dtype='bf16'} : [B,T,1024]bf16   (one line in the dump)

Nodes come in topological order with ties broken by id, attributes sorted, values as Python
literals (`ast.literal_eval` reads them back), result types after the colon, and a trailing
`# from PASS(ids)` on nodes a pass made. Source nodes (input, param, state) show their shape
and dtype as the result type only. print -> parse -> print gives the same text.
"""

from __future__ import annotations

import ast
import re

from v4c.errors import IRError
from v4c.ir.graph import Graph, Node, Value
from v4c.ir.op import make_op
from v4c.ir.types import TensorType

HEADER = "# v4c IR: "
_LINE = re.compile(
    r"^%(?P<id>[\w.]+) = (?P<kind>\w+)\((?P<operands>[^)]*)\)"
    r"(?: \{(?P<attrs>.*)\})? : (?P<types>.*?)(?:  # from (?P<pass>[\w-]+)\((?P<replaced>[^)]*)\))?$"  # noqa: E501
)


def print_graph(graph: Graph) -> str:
    lines = [f"{HEADER}{graph.name}"]
    lines += [print_node(graph, node) for node in graph.nodes()]
    return "\n".join(lines) + "\n"


def print_node(graph: Graph, node: Node) -> str:
    attrs = dict(node.op.attrs())
    if node.op.source:
        attrs.pop("shape"), attrs.pop("dtype")
    if attrs.get("split") == ():  # a whole param (one process) shows no split
        attrs.pop("split")
    if node.layer is not None:
        attrs["layer"] = node.layer
    body = ", ".join(f"{k}={attrs[k]!r}" for k in sorted(attrs))
    operands = ", ".join(map(str, graph.operands(node.id)))
    types = ", ".join(map(str, node.types)) or "()"
    line = (
        f"%{node.id} = {node.op.kind}({operands})"
        + (f" {{{body}}}" if body else "")
        + f" : {types}"
    )
    if node.origin is not None:
        line += f"  # from {node.origin[0]}({', '.join(node.origin[1])})"
    return line


def parse_graph(text: str) -> Graph:
    lines = text.splitlines()
    if not lines or not lines[0].startswith(HEADER):
        raise IRError(f"not a v4c IR dump: first line must start with {HEADER!r}")
    graph = Graph(lines[0][len(HEADER) :])
    for number, line in enumerate(lines[1:], start=2):
        if line.strip():
            try:
                _parse_line(graph, line)
            except (IRError, ValueError, SyntaxError) as err:
                raise IRError(f"line {number}: {err}: {line[:120]}") from None
    return graph


def _parse_line(graph: Graph, line: str) -> None:
    match = _LINE.match(line)
    if not match:
        raise IRError("cannot parse")
    attrs = _parse_attrs(match["attrs"] or "")
    layer = attrs.pop("layer", None)
    types = tuple(TensorType.parse(t) for t in _split_types(match["types"]))
    kind = match["kind"]
    if kind in ("input", "param", "state"):
        attrs |= {"shape": types[0].shape, "dtype": types[0].dtype}
    operands = [_parse_value(v) for v in match["operands"].split(",") if v.strip()]
    origin = None
    if match["pass"]:
        origin = (
            match["pass"],
            tuple(r.strip() for r in match["replaced"].split(",") if r.strip()),
        )
    graph.add(match["id"], make_op(kind, attrs), operands, types, layer=layer, origin=origin)


def _parse_attrs(text: str) -> dict:
    if not text:
        return {}
    call = ast.parse(f"f({text})", mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def _split_types(text: str) -> list[str]:
    text = text.strip()
    return [] if text == "()" else re.findall(r"\[[^\]]*\]\w+", text)


def _parse_value(text: str) -> Value:
    text = text.strip()
    if not text.startswith("%"):
        raise IRError(f"bad operand {text!r}")
    node, _, index = text[1:].partition(":")
    return Value(node, int(index) if index else 0)
