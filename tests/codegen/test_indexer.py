"""indexer_topk (Triton) against the op's reference: the same index tensor, order included.

Rows sit at different positions, so a query sees no entry, a few, fewer than top-k (-1
padding) or the whole (clamped) cache; the radix select must find the k-th score and break
ties as the reference does (equal scores: lower entry first), constructed exactly with integer
inputs, across the top-k cut too. The key cache holds one row more than the step, whose rows
read cache rows `slots` (permuted, one skipped), so a kernel that read row b instead of
slots[b] would pick other entries. The operands are the projections the graph's linears make
(q = qr·wq_bᵀ, weights = x·weights_projᵀ), as the built graph wires them.
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.codegen.params import describe
from v4c.ir.build import build
from v4c.ir.ops.indexer import IndexerTopk
from v4c.ir.semantics.indexer import indexer_score
from v4c.ir.semantics.quant import fp4_sim
from v4c.spec import load_spec

HEADS, HEAD_DIM, ROPE = 4, 16, 8


def _run(op, ins, kernel_cache, **blocks):
    params = jit.params_for(op.kind, op.attrs(), [describe(t) for t in ins])
    (got,) = run_kernel(op, ins, kernel_cache, params.model_copy(update=blocks))
    (want,) = op.run(ins)
    assert got.dtype == want.dtype == torch.int64 and got.shape == want.shape
    return got, want


@pytest.mark.parametrize(
    "topk, entries, dtype, blocks",
    [
        (5, 40, torch.float32, {}),  # one pass of the select; some rows see none
        (5, 40, torch.float32, {"block": 16, "block_s": 16, "block_n": 16, "part": 16}),  # 3 parts
        (7, 300, torch.bfloat16, {"block": 64, "part": 128}),  # longer: 3 parts of 2 steps
        (40, 24, torch.bfloat16, {}),  # top-k beyond every row's entries: all picked, -1 after
    ],
)
def test_matches_reference(topk, entries, dtype, blocks, kernel_cache):
    gen = torch.Generator().manual_seed(topk + entries)
    rows, tokens = 3, 4
    positions = torch.tensor([0, 62, 4 * entries + 50])[:, None] + torch.arange(tokens)  # [B, T]
    ins = [
        torch.randn(rows, tokens, HEADS * HEAD_DIM, generator=gen).to(dtype),  # q
        torch.randn(rows, tokens, HEADS, generator=gen).to(dtype),  # weights
        positions,
        torch.tensor([3, 0, 2]),  # slots: step rows 0, 1, 2 -> cache rows 3, 0, 2 of 4
        torch.randn(rows + 1, entries, HEAD_DIM, generator=gen).to(dtype),
    ]
    op = IndexerTopk(ROPE, 10000.0, (4.0, 64, 32.0, 1.0), topk=topk, ratio=4)
    got, want = _run(op, ins, kernel_cache, **blocks)
    assert (want == -1).any() and (want[2] >= 0).all() == (topk <= entries)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("entries, topk, part", [(20, 6, 32), (90, 9, 32), (300, 24, 16)])
def test_exact_ties_go_to_the_lower_entry(entries, topk, part, kernel_cache):
    """Integer inputs keep every score exact; keys drawn from a small palette (one of them zero,
    which scores an exact 0) repeat, so many scores tie, across the top-k cut too, at three
    context lengths. `block` 16 splits the tie counting over several steps, `part` the row
    over several programs (1, 3 and 19 parts: the ties' order crosses them, and the last
    part's program lays out the others' picks and candidates)."""
    gen = torch.Generator().manual_seed(entries)
    rows, tokens = 2, 3

    def ints(lo, hi, *shape):
        return torch.randint(lo, hi + 1, shape, generator=gen).float()

    palette = ints(-1, 1, 4, HEAD_DIM)
    palette[:, HEAD_DIM - ROPE :] = 0  # no RoPE'd channels: q·k stays an exact integer
    palette[0] = 0
    keys = palette[torch.randint(0, 4, (rows + 1, entries), generator=gen)]  # [N, C, di]
    positions = torch.tensor([[4 * entries - 30, 4 * entries - 29, 4 * entries - 28],
                              [4 * entries + 7, 4 * entries + 8, 4 * entries + 9]])  # fmt: skip
    slots = torch.tensor([2, 0])  # step rows 0, 1 -> cache rows 2, 0 of 3
    q, w = ints(-2, 2, rows, tokens, HEADS * HEAD_DIM), ints(-1, 1, rows, tokens, HEADS)
    ins = [q, w, positions, slots, keys.to(torch.bfloat16)]
    op = IndexerTopk(ROPE, 10000.0, None, topk=topk, ratio=4)
    got, want = _run(op, ins, kernel_cache, block=16, part=part)
    read = keys[slots].to(torch.bfloat16)  # [B, C, di]: the rows the step reads
    scores = indexer_score(q, w, positions, read, rope_freqs=op.freqs("cpu"))
    picked = scores.gather(-1, want)
    assert (picked[..., 1:] == picked[..., :-1]).any()  # ties among the picks
    visible = torch.arange(entries) < (positions[..., None] + 1) // 4  # > topk for every query
    unpicked = scores.masked_fill(~visible, float("nan")).scatter(-1, want, float("nan"))
    assert (unpicked == picked[..., -1:]).any()  # and a tie across the cut
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("entries", [64, 300])
def test_one_first_level_bin(entries, kernel_cache):
    """Scores 1/8 * (1 + j * 2^-13) for j a random integer below 16, repeated: every score
    shares its top 12 bits (sign, exponent, 3 mantissa bits), so the first level leaves every
    entry a candidate and the two 10-bit passes find the k-th; the repeats tie at the cut.
    One head (weight 1) with q = e0, keys e0 * (1 + j * 2^-13), scale (16 * 4)^-1/2 = 1/8."""
    gen = torch.Generator().manual_seed(entries)
    keys = torch.zeros(2, entries, HEAD_DIM)
    j = torch.randint(0, 16, (2, entries), generator=gen).float()
    keys[..., 0] = 1 + j * 2**-13
    q = torch.zeros(2, 1, HEADS * HEAD_DIM)
    q[..., 0] = 1.0
    w = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(2, 1, HEADS).contiguous()
    positions = torch.tensor([[4 * entries], [4 * entries // 2]])  # all entries, half of them
    ins = [q, w, positions, torch.tensor([1, 0]), keys]
    op = IndexerTopk(ROPE, 10000.0, None, topk=12, ratio=4)
    got, want = _run(op, ins, kernel_cache, block=32, part=64)
    picked = keys[torch.tensor([1, 0])][torch.arange(2)[:, None], want[:, 0], 0]  # [2, 12]
    visible = torch.arange(entries) < (positions + 1) // 4  # [2, C]
    unpicked = keys[torch.tensor([1, 0]), :, 0].masked_fill(~visible, float("nan"))
    unpicked = unpicked.scatter(-1, want[:, 0], float("nan"))
    assert (unpicked == picked[:, -1:]).any()  # a tie across the cut
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_flash_decode_spreads_each_query():
    """V4-Flash's indexer (64 heads of 128, top-512) at batch 1: a decode step at an 8k context
    (2048 entries) scores in 128 programs of 16 entries and selects in 16 parts of 128; at
    256k (65,536 entries) 256 programs of 256 and 128 parts of 512. A prefill of 1024 tokens
    gives a program 256 entries to score and the whole row to select; the dot's width is the
    decode's, so a score does not depend on the step's size."""
    attrs = {"rope_dim": 64, "topk": 512, "ratio": 4, "theta": 10000.0, "yarn": None}

    def made(tokens, entries):
        ins = [((1, tokens, 64 * 128), "bf16"), ((1, tokens, 64), "bf16"), ((1, tokens), "i64"),
               ((1,), "i64"), ((1, entries, 128), "bf16")]  # fmt: skip
        return jit.params_for("indexer_topk", attrs, ins)

    cases = [(2048, (16, 16, 128), (128, 16)), (65536, (64, 256, 512), (256, 128))]
    for entries, blocks, programs in cases:
        got = made(1, entries)
        assert (got.block_n, got.block_s, got.part) == blocks
        assert (entries // got.block_s, entries // got.part) == programs
    prefill = made(1024, 2048)
    assert (prefill.block_n, prefill.block_s, prefill.part) == (16, 256, 2048)


def test_the_projections_are_the_graphs_linears():
    """The built graph feeds the indexer wq_b's and weights_proj's `linear` nodes (GEMMs the
    plan sees), reading qr and the attention input."""
    graph = build(load_spec("tiny"))
    node = next(n for n in graph.nodes() if n.op.kind == "indexer_topk")
    q, w = (graph.node(v.node) for v in graph.operands(node.id)[:2])
    assert q.op.kind == w.op.kind == "linear"
    weights = [graph.node(graph.operands(n.id)[1].node).op.tensor for n in (q, w)]
    assert [t.rsplit(".", 2)[-2] for t in weights] == ["wq_b", "weights_proj"]
    attn = node.id.removesuffix(".indexer")
    assert graph.operands(q.id)[0].node == f"{attn}.q_norm"
    assert graph.operands(w.id)[0] == graph.operands(f"{attn}.wq_a")[0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_official_numerics(dtype, kernel_cache):
    """`sim` (numerics: official): q Hadamard-rotated and rounded to FP4 (blocks of 32 over a
    head of 64), and with bf16 activations the official bf16 points (q after RoPE and after
    the Hadamard, the weights times the scale, q·k, each head's weighted score, their sum):
    the kernel computes each as its reference does (bf16 rounding on the bits: the
    interpreter's cast truncates), so the picks are the reference's; fp32 activations keep
    only the FP4 rounding. The picks differ from plain numerics' (the rounding is on)."""
    gen = torch.Generator().manual_seed(3)
    heads, dim, entries, topk = 4, 64, 70, 9
    positions = torch.tensor([[4 * entries - 5, 4 * entries + 3], [90, 150]])
    q = torch.randn(2, 2, heads * dim, generator=gen).to(dtype)
    w = torch.randn(2, 2, heads, generator=gen).to(dtype)
    keys = fp4_sim(torch.randn(3, entries, dim, generator=gen)).to(dtype)  # as compressed
    ins = [q, w, positions, torch.tensor([2, 0]), keys]
    op = IndexerTopk(16, 10000.0, None, topk=topk, ratio=4, sim=True)
    got, want = _run(op, ins, kernel_cache, block=32)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    plain = IndexerTopk(16, 10000.0, None, topk=topk, ratio=4).run(ins)[0]
    assert not torch.equal(plain, want)  # the rounding changes the picks


def test_histograms_in_the_programs_counters(kernel_cache, monkeypatch):
    """The histograms and finish counts live in the counter words a bound program hands the
    call (runtime/scratch.py, zeroed once at binding): the call fills nothing, the last part
    of each query puts them back to zero, and scratch bytes left by an earlier call (0xff) are
    never read. Counters for 5 queries make the 12 rows run in 3 passes over the same words;
    each call's picks are the reference's."""
    gen = torch.Generator().manual_seed(5)
    rows, tokens, entries = 3, 4, 90
    positions = torch.tensor([0, 62, 4 * entries + 50])[:, None] + torch.arange(tokens)
    ins = [torch.randn(rows, tokens, HEADS * HEAD_DIM, generator=gen),
           torch.randn(rows, tokens, HEADS, generator=gen), positions, torch.tensor([3, 0, 2]),
           torch.randn(rows + 1, entries, HEAD_DIM, generator=gen)]  # fmt: skip
    op = IndexerTopk(ROPE, 10000.0, None, topk=7, ratio=4)
    shapes = [describe(t) for t in ins]
    params = jit.params_for(op.kind, op.attrs(), shapes).model_copy(update={"part": 32})
    kernel = jit.load(params, kernel_cache)
    assert kernel.counter_words(shapes) == rows * tokens * (4096 + 1)  # histogram + count
    scratch = torch.full((kernel.scratch_bytes(shapes),), 255, dtype=torch.uint8)
    counters = torch.zeros(5 * kernel.COUNTED, dtype=torch.int32)
    (want,) = op.run(ins)

    def refused(*args, **kwargs):
        raise AssertionError("the call filled a tensor")

    monkeypatch.setattr(torch.Tensor, "zero_", refused)
    for _ in range(2):
        (got,) = kernel.run(*ins, scratch=scratch, counters=counters)
        assert not counters.any()
        torch.testing.assert_close(got, want, rtol=0, atol=0)
