"""Typed roles (`v4c.ir.roles`) in place of node-id and checkpoint-name matching: on the
shipped structures (tiny, the Flash slice) every pass decision that used to read a string
reads the role and decides the same (the old string rules are the oracles below), and
renaming every node id to an opaque name changes no decision of the whole pipeline."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import replace

import pytest

from tests.passes.conftest import FULL
from v4c.ir.build import build
from v4c.ir.graph import Graph
from v4c.ir.printer import parse_graph, print_graph
from v4c.ir.roles import CompressorRole, Projection
from v4c.passes import load_passes
from v4c.passes.base import PassContext
from v4c.passes.manager import run_pipeline
from v4c.passes.pipeline import DEFAULT_PIPELINE
from v4c.passes.shard import param_splits
from v4c.spec import layer_table, load_spec
from v4c.spec.parallel import Grid
from v4c.spec.schema import CSA_RATIO

load_passes()
SPECS = ("tiny", "specs/variants/flash-2l-slice.yaml")
GRIDS = [(2, 1), (1, 2), (2, 2), (4, 2)]

# -- the string rules the roles replaced, kept as oracles ----------------------------------

_OLD_EXPERT = re.compile(r"\.ffn\.experts\.\{e\}\.w([123])\.weight$")
_OLD_SHARED = re.compile(r"\.ffn\.shared_experts\.(?:\d+\.)?w([123])\.weight$")
_OLD_BY_TP = {
    "attn.wq_b.weight": 0,
    "attn.attn_sink": 0,
    "attn.wo_a.weight": 0,
    "attn.wo_b.weight": 1,
    "attn.indexer.wq_b.weight": 0,
    "attn.indexer.weights_proj.weight": 0,
}


def old_param_split(name: str, grid: Grid) -> tuple:
    """shard's split of a checkpoint tensor by its name, before roles."""
    tp, ep, world = grid.tp, grid.ep, grid.world
    if name in ("embed.weight", "head.weight"):
        splits = [(0, world, "world")]
    elif match := _OLD_EXPERT.search(name):
        splits = [(0, ep, "ep"), (2 if match[1] == "2" else 1, tp, "tp")]
    elif match := _OLD_SHARED.search(name):
        splits = [(1 if match[1] == "2" else 0, world, "world")]
    else:
        dim = next((d for s, d in _OLD_BY_TP.items() if name.endswith("." + s)), None)
        splits = [] if dim is None else [(dim, tp, "tp")]
    return tuple(s for s in splits if s[1] > 1)


@pytest.fixture(scope="module", params=SPECS)
def spec(request):
    return load_spec(request.param)


@pytest.fixture(scope="module")
def graph(spec):
    return build(spec)


def _weight(graph: Graph, id: str) -> str:
    return graph.node(graph.operands(id)[1].node).op.tensor


def test_the_lm_head_role_is_the_old_lm_head_id(graph):
    """select_outputs narrowed `linear`s whose id ended in `.lm_head`; shard all-gathered
    the linear of `head.weight`."""
    for node in graph.nodes():
        if node.op.kind == "linear":
            head = node.op.role == Projection.LM_HEAD
            assert (
                head == node.id.endswith(".lm_head") == (_weight(graph, node.id) == "head.weight")
            )


def test_the_o_b_role_is_the_old_wo_b_name(graph):
    """shard all-reduced over tp after the linear of a `.attn.wo_b.weight`."""
    for node in graph.nodes():
        if node.op.kind == "linear":
            wo_b = _weight(graph, node.id).endswith(".attn.wo_b.weight")
            assert (node.op.role == Projection.O_B) == wo_b, node.id


def test_every_linear_of_the_model_has_a_role(graph):
    roles = Counter(n.op.role for n in graph.nodes() if n.op.kind == "linear")
    assert Projection.NONE not in roles
    assert roles[Projection.COMPRESSOR_KV] == roles[Projection.COMPRESSOR_GATE] > 0


def test_compressor_roles_and_ratios_are_the_old_id_rules(spec, graph):
    """build chose the CSA ratio for compressors whose id did not end in `.attn.compressor`;
    simulate_numerics rounded to FP4 the new entries of those with `.indexer.` in the id."""
    ratios = {row.index: row.compress_ratio for row in layer_table(spec)}
    seen = Counter()
    for node in graph.nodes():
        if node.op.kind != "compressor":
            continue
        indexer = node.op.role == CompressorRole.INDEXER
        assert indexer == (".indexer." in node.id) == (not node.id.endswith(".attn.compressor"))
        assert node.op.ratio == (CSA_RATIO if indexer else ratios[node.layer])
        seen[node.op.role] += 1
    assert seen[CompressorRole.ATTENTION] and seen[CompressorRole.INDEXER]


def test_official_numerics_round_the_old_compressors(spec):
    graph = build(spec)
    run_pipeline(
        graph, PassContext(spec, replace(FULL, numerics="official")), ["simulate_numerics"]
    )
    sims = {n.id: n.op.sim for n in graph.nodes() if n.op.kind == "compressor"}
    assert sims and all(sim == ("fp4" if ".indexer." in id else "fp8") for id, sim in sims.items())


@pytest.mark.parametrize("tp, ep", GRIDS)
def test_param_splits_are_the_old_name_table(tp, ep, graph):
    grid = Grid(tp, ep)
    params = {n.id: n.op.tensor for n in graph.nodes() if n.op.source == "param"}
    got = param_splits(graph, grid)
    want = {id: old_param_split(name, grid) for id, name in params.items()}
    assert got == {id: s for id, s in want.items() if s}


# -- node ids are labels: renamed, the pipeline decides the same ----------------------------


def opaque(graph: Graph) -> Graph:
    """`graph` with every node id replaced by `n<index>` (sorted order kept)."""
    names = {id: f"n{i:05d}" for i, id in enumerate(sorted(n.id for n in graph.nodes()))}
    text = re.sub(r"%([\w.]+)", lambda m: "%" + names[m[1]], print_graph(graph))
    return parse_graph(text)


def shapes(graph: Graph) -> Counter:
    """The graph up to node ids: each node as a hash of its op, types, layer and (through its
    operands) everything it reads, counted."""
    digest: dict[str, str] = {}
    for id in graph.toposort():
        node = graph.node(id)
        ins = [(digest[v.node], v.index) for v in graph.operands(id)]
        key = repr((node.op.kind, sorted(node.op.attrs().items()), node.types, node.layer, ins))
        digest[id] = hashlib.sha256(key.encode()).hexdigest()
    return Counter(digest.values())


@pytest.mark.parametrize(
    "name, numerics, tp, ep",
    [(SPECS[0], "plain", 1, 1), (SPECS[0], "official", 2, 2), (SPECS[1], "official", 8, 8)],
)
def test_renamed_node_ids_change_no_pass_decision(name, numerics, tp, ep):
    spec = load_spec(name)
    ctx = PassContext(spec, replace(FULL, logits="last", numerics=numerics, tp=tp, ep=ep))
    passes = DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index("memory_plan")]
    named, renamed = build(spec), opaque(build(spec))
    assert shapes(named) == shapes(renamed)
    stats = [
        [(r.name, r.changed, r.stats) for r in run_pipeline(g, ctx, passes)]
        for g in (named, renamed)
    ]
    assert stats[0] == stats[1]
    assert shapes(named) == shapes(renamed)
