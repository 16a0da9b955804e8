"""An op's role survives the text form and a plan's constants, is checked when the op is
made, and never makes two ops of one computation differ."""

from __future__ import annotations

import json

import pytest

from v4c.errors import IRError
from v4c.ir.build import build
from v4c.ir.op import make_op
from v4c.ir.ops.compressor import Compressor
from v4c.ir.ops.gemm import Linear
from v4c.ir.printer import parse_graph, print_graph
from v4c.ir.roles import CompressorRole, Projection
from v4c.spec import load_spec


def test_roles_round_trip_through_the_dump():
    graph = build(load_spec("tiny"))
    parsed = parse_graph(print_graph(graph))
    for node in graph.nodes():
        role = getattr(node.op, "role", None)
        assert getattr(parsed.node(node.id).op, "role", None) == role
    assert "role='lm_head'" in print_graph(graph)


def test_a_plan_constant_gives_back_the_member():
    constants = json.loads(json.dumps(Linear("fp32", role=Projection.LM_HEAD).attrs()))
    assert constants["role"] == "lm_head"
    assert make_op("linear", constants).role is Projection.LM_HEAD
    assert Compressor(role="indexer").role is CompressorRole.INDEXER


def test_a_role_is_metadata_of_the_op():
    assert Linear(role=Projection.Q_A) == Linear(role=Projection.KV)
    assert hash(Linear(role=Projection.Q_A)) == hash(Linear())


@pytest.mark.parametrize(
    ("kind", "attrs"), [("linear", {"role": "wq"}), ("compressor", {"role": ""})]
)
def test_an_unknown_role_is_refused_naming_the_roles(kind, attrs):
    with pytest.raises(IRError, match=f"{kind}: role .* is not one of"):
        make_op(kind, attrs)
