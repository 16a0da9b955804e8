"""The shard pass: every rank's graph, run on the reference executor with the collectives
simulated in one process (`runtime.comm.LocalGroup`), computes the unsharded graph's
outputs (prefill, decode, prefill after earlier tokens; MTP included); and the graph says
what each rank holds and where it communicates."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from tests.passes.conftest import FULL, assert_same_outputs, graph_before, run_steps, steps
from v4c.errors import IRError
from v4c.ir.printer import parse_graph, print_graph
from v4c.ir.verify import verify
from v4c.passes import load_passes
from v4c.passes.base import PASSES, PassContext
from v4c.runtime.comm import LocalGroup
from v4c.runtime.checkpoint.pieces import graph_params, rank_weights
from v4c.runtime.reference import ReferenceExecutor
from v4c.spec.parallel import Grid

load_passes()
GRIDS = [(2, 1), (1, 2), (2, 2)]


def sharded(spec, tp: int, ep: int):
    before = graph_before(spec, "shard")
    after = before.copy()
    result = PASSES["shard"](after, PassContext(spec, replace(FULL, tp=tp, ep=ep)))
    return before, after, result


def run_ranks(graph, weights, grid: Grid) -> list[list[dict]]:
    """Every rank's outputs of `steps()`, each rank on its pieces of `weights`."""
    params = graph_params(graph)

    def rank(comm):
        pieces = rank_weights(weights, params, grid, comm.rank)
        executor = ReferenceExecutor(graph, pieces, comm=comm)
        state = executor.new_state(batch=2, max_seq=64)
        return [executor.run(step, state) for step in steps()]

    return LocalGroup(grid).run(rank)


@pytest.fixture(scope="module")
def unsharded(tiny, tiny_weights):
    return run_steps(graph_before(tiny, "shard"), tiny_weights)


@pytest.mark.parametrize("tp, ep", GRIDS)
def test_every_rank_computes_the_unsharded_outputs(tp, ep, tiny, tiny_weights, unsharded):
    _, after, result = sharded(tiny, tp, ep)
    assert result.changed
    for outputs in run_ranks(after, tiny_weights, Grid(tp, ep)):
        assert_same_outputs(unsharded, outputs)


def test_the_rank_graph_holds_pieces_and_collectives(tiny):
    before, after, result = sharded(tiny, 2, 2)
    verify(after, tiny)  # the pieces' shapes are what the spec implies, split
    kinds = Counter(n.op.kind for n in after.nodes())
    # 5 blocks (4 + MTP): attention and MoE all-reduces, 2 CSA indexers, 2 embeddings
    assert kinds["all_reduce"] == 5 + 5 + 2 + 2 and kinds["all_gather"] == 2
    assert kinds["indexer_topk"] == 0 and kinds["indexer_score"] == kinds["indexer_select"] == 2
    assert kinds["masked_embed"] == 2 and kinds["shard_start"] == 2 + 5  # vocab, experts
    wq_b = after.node("w.layers.1.attn.wq_b.weight").op
    assert wq_b.split == ((0, 2, "tp"),) and wq_b.shape == (4 * 128 // 2, 128)
    w2 = after.node("w.layers.1.ffn.experts.E.w2.weight").op
    assert w2.split == ((0, 2, "ep"), (2, 2, "tp")) and w2.shape == (4, 256, 32)
    shared = after.node("w.layers.1.ffn.shared_experts.w1.weight").op
    assert shared.split == ((0, 4, "world"),) and shared.shape == (16, 256)
    assert after.node("L01.attn.q_heads").op.heads == 2
    assert after.node("L01.attn.wo_a").op.groups == 1
    assert after.node("L01.ffn.moe").op.local_experts == 4
    reduce = after.node("L01.attn.wo_b.all_reduce")
    assert reduce.op.group == "tp" and reduce.origin == ("shard", ("L01.attn.wo_b",))
    assert after.node("L01.ffn.out0.all_reduce").op.group == "world"
    assert after.node("head.lm_head").types[0].shape == ("B", "T", 129280 // 4)
    assert after.type_of(after.operands("out.logits")[0]).shape == ("B", "T", 129280)
    text = print_graph(after)
    assert "split=((0, 2, 'tp'),)" in text and "split=()" not in text
    assert print_graph(parse_graph(text)) == text
    assert result.stats["all_reduce"] == 14 and result.stats["all_gather"] == 2


def test_one_process_is_unchanged(tiny):
    before, after, result = sharded(tiny, 1, 1)
    assert not result.changed and print_graph(after) == print_graph(before)


def test_a_grid_the_spec_cannot_split_is_refused_naming_the_field(tiny):
    with pytest.raises(IRError, match=r"attention.o_groups \(2\) is not divisible by tp = 4"):
        sharded(tiny, 4, 1)
