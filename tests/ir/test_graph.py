"""The IR: builder output, the text form round trip, and the verifier catching broken graphs."""

from __future__ import annotations

import pytest

from v4c.errors import IRError
from v4c.ir.build import build
from v4c.ir.graph import Value
from v4c.ir.ops.core import Add, Input, Param, State
from v4c.ir.ops.gemm import Linear
from v4c.ir.ops.hc import HcExpand
from v4c.ir.ops.norm import RmsNorm
from v4c.ir.printer import parse_graph, print_graph
from v4c.ir.types import TensorType
from v4c.ir.verify import verify
from v4c.passes.base import PassContext
from v4c.passes.manager import run_pipeline
from v4c.spec import load_spec
from v4c.spec.tensors import checkpoint_tensors


@pytest.fixture(scope="module")
def tiny():
    return load_spec("tiny")


@pytest.mark.parametrize("name", ["tiny", "flash", "pro"])
def test_build_verifies_and_binds_every_tensor_once(name):
    spec = load_spec(name)
    graph = build(spec)
    verify(graph, spec)
    params = [n.op.tensor for n in graph.nodes() if n.op.kind == "param"]
    assert sorted(params) == sorted(t.name for t in checkpoint_tensors(spec))


def test_build_structure(tiny):
    graph = build(tiny)
    kinds = [n.op.kind for n in graph.nodes()]
    assert kinds.count("sparse_attention") == 5  # 4 layers + MTP
    assert kinds.count("compressor") == 2 * 2 + 1  # CSA: main + indexer; HCA: main
    assert kinds.count("indexer_topk") == 2
    assert {n.op.gate for n in graph.nodes() if n.op.kind == "moe"} == {"hash", "score"}
    assert sorted(n.op.key for n in graph.nodes() if n.op.kind == "output") == [
        "hidden",
        "logits",
        "mtp_hidden",
        "mtp_logits",
    ]
    core = graph.node("L02.attn.core")
    assert (core.op.ratio, core.op.window) == (128, 16)
    assert graph.node("L01.attn.q_rope").op.yarn == (16.0, 65536, 32.0, 1.0)
    assert graph.node("L00.attn.q_rope").op.yarn is None
    # caches have their own rows (N); the step's rows (B) name theirs through `slots`
    assert graph.type_of(Value("cache.L02.compressed")) == TensorType(("N", "S/128", 128), "bf16")
    assert graph.type_of(Value("in.slots")) == TensorType(("B",), "i64")
    for id in ("L01.attn.compressor", "L01.attn.indexer", "L01.attn.core", "M00.attn.core"):
        assert Value("in.slots") in graph.operands(id), id


@pytest.mark.parametrize("stage", ["build", "optimised"])
def test_print_parse_print_is_identical(tiny, stage):
    graph = build(tiny)
    if stage == "optimised":
        run_pipeline(graph, PassContext(tiny))
    text = print_graph(graph)
    again = parse_graph(text)
    verify(again, tiny)
    assert print_graph(again) == text


def test_printed_line_format(tiny):
    text = print_graph(build(tiny))
    assert (
        "%L01.attn.wq_a = linear(%L01.attn_norm, %w.layers.1.attn.wq_a.weight) "
        "{act_quant=False, layer=1, out_dtype='bf16', role='q_a'} : [B,T,128]bf16" in text
    )
    assert (
        "%cache.L02.compressor_score = state() {fill='-inf', key='L02.compressor_score'} : [N,128,128]fp32"  # noqa: E501
        in text
    )
    assert "%in.slots = input() {key='slots'} : [B]i64" in text
    assert (
        "%L02.attn.core = sparse_attention(%L02.attn.q_rope, %L02.attn.kv_rope, %in.positions, "
        "%in.slots, %w.layers.2.attn.attn_sink, %cache.L02.window, %L02.attn.compressor) " in text
    )


def test_parse_errors_name_the_line():
    with pytest.raises(IRError, match="line 2: unknown op 'frobnicate'"):
        parse_graph("# v4c IR: x\n%a = frobnicate() : [2]fp32\n")
    with pytest.raises(IRError, match="not a v4c IR dump"):
        parse_graph("hello\n")


def _replace_node(graph, id, op, types=None):
    """Swap node `id` for one with `op` (and `types`), keeping its operands and users."""
    operands = graph.operands(id)
    node = graph.node(id)
    tmp = graph.add(id + "_new", op, operands, types or node.types, layer=node.layer)
    for i in range(len(node.types)):
        graph.replace_uses(node.out(i), tmp.out(i))
    graph.erase(id)
    return tmp


def test_verifier_catches_a_wrong_type(tiny):
    graph = build(tiny)
    _replace_node(graph, "L00.attn.wq_a", Linear(), (TensorType(("B", "T", 64), "bf16"),))
    with pytest.raises(
        IRError, match=r"L00.attn.wq_a_new: types \[B,T,64\]bf16 but linear infers \[B,T,128\]bf16"
    ):
        verify(graph)


@pytest.mark.parametrize(
    "node, op, message",
    [
        ("in.slots", Input(("B",), "i32", key="slots"), r"slots \[B\]i32 for \[B,T\]i64"),
        ("in.slots", Input(("T",), "i64", key="slots"), r"slots \[T\]i64 for \[B,T\]i64"),
        (
            "cache.L02.window",
            State(("B", 16, 128), "bf16", key="L02.window"),
            r"caches \[B,16,128\]bf16, \[N,S/128,128\]bf16 differ in their rows",
        ),
    ],
)
def test_verifier_catches_bad_slots_and_cache_rows(tiny, node, op, message):
    """slots: one i64 cache row per step row; every cache an op touches has the same rows."""
    graph = build(tiny)
    _replace_node(graph, node, op, op.infer([]))
    with pytest.raises(IRError, match=message):
        verify(graph)


def test_verifier_catches_a_mis_shaped_param(tiny):
    graph = build(tiny)
    _replace_node(
        graph, "w.layers.0.attn.attn_sink", Param((5,), "fp32", tensor="layers.0.attn.attn_sink")
    )
    with pytest.raises(
        IRError, match=r"layers.0.attn.attn_sink is \[5\] fp32, the spec implies \[4\] fp32"
    ):
        verify(graph, tiny)


def test_verifier_catches_unbound_and_doubly_bound_tensors(tiny):
    graph = build(tiny)
    graph.add("w.dup", Param((4,), "fp32", tensor="layers.0.attn.attn_sink"), [])
    with pytest.raises(IRError, match="'layers.0.attn.attn_sink' bound 2 times"):
        verify(graph, tiny)
    graph = build(tiny)
    _replace_node(
        graph, "w.layers.0.attn.attn_sink", Param((4,), "fp32", tensor="layers.0.attn.sink")
    )
    with pytest.raises(IRError) as err:
        verify(graph, tiny)
    assert "'layers.0.attn.attn_sink' is not bound" in str(err.value)
    assert "binds 'layers.0.attn.sink', which the spec does not imply" in str(err.value)


def test_verifier_catches_a_wrong_operand_count(tiny):
    graph = build(tiny)
    node = graph.node("L00.attn.wq_a")
    graph.add("bad", Linear(), graph.operands(node.id))
    graph.add("bad2", Add(), [Value("bad"), Value("bad")])
    _replace_node(graph, "bad2", RmsNorm(weighted=False))
    with pytest.raises(IRError, match=r"bad2_new: rms_norm takes 1 operands \('x',\), has 2"):
        verify(graph)


def test_graph_rejects_cycles_and_dangling_operands(tiny):
    graph = build(tiny)
    with pytest.raises(IRError, match="operand %nowhere is not a node"):
        graph.add("x", Add(), [Value("nowhere"), Value("nowhere")])
    graph.add("a", HcExpand(4), [Value("embed")])
    graph.replace_uses(Value("embed"), Value("a"), only={"a"})  # a uses itself
    with pytest.raises(IRError, match="cycle"):
        verify(graph)
