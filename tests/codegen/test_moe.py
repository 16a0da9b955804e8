"""The MoE templates (Triton) against their ops' reference semantics: the score and hash
gates, the sort by expert, the grouped SwiGLU in every weight format, the combine, the
dense shared expert, and the four scheduled kernels chained against the unfused `moe` op.

Routing is built by hand where it matters: experts with no token, tokens with the same
expert set, an expert group longer than one tile, and slot counts that are not a multiple
of any block. Activations are large enough that both SwiGLU clamps bite (asserted).
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.ir.weights import WeightFormat
from v4c.codegen import jit
from v4c.codegen.jit import CodegenError
from v4c.codegen.ops.moe import MoeSort as MoeSortParams
from v4c.ir.ops.moe import GroupedSwiglu, Moe, MoeCombine, MoeGate, MoeRoute, MoeSort, Swiglu
from v4c.ir.semantics.moe import sorted_rows
from v4c.ir.semantics.quant import QuantWeight, fp4_quantize, fp8_block_quantize

D, I, E, K = 64, 32, 8, 2
LIMIT = 10.0
# Output tolerances by activation dtype. fp32: summation order only (the expert outputs are
# ~20 on average, up to ~200, so atol 5e-5 is ~2e-6 of them). bf16: the output's rounding.
# Quantised weights are checked through their exact dequantisation (the reference runs on
# `dequantize(fp32)`), so they share these.
TOL = {torch.float32: dict(rtol=1e-5, atol=5e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=2e-2)}


def dequantized(ins):
    return [t.dequantize(torch.float32) if isinstance(t, QuantWeight) else t for t in ins]


def routing(n: int, gen: torch.Generator) -> torch.Tensor:
    """idx [1,n,K]: experts 0 and 5 unused, tokens 0..2 share the set {3, 6}."""
    pool = torch.tensor([1, 2, 3, 4, 6, 7])
    idx = torch.stack([pool[torch.randperm(6, generator=gen)[:K]] for _ in range(n)])
    idx[:3] = torch.tensor([6, 3])
    return idx.unsqueeze(0)


def experts(fmt: str, gen: torch.Generator, lead: tuple[int, ...] = (E,)):
    """(w1 [*,I,D], w2 [*,D,I], w3 [*,I,D]) as tensors or QuantWeights of format fmt."""
    ws = [0.3 * torch.randn(*lead, *shape, generator=gen) for shape in ((I, D), (D, I), (I, D))]
    if fmt in ("bf16", "fp32"):
        return [w.to(torch.bfloat16 if fmt == "bf16" else torch.float32) for w in ws]
    if fmt == "fp4":
        return [QuantWeight(*fp4_quantize(w), WeightFormat.fp4(32)) for w in ws]
    block = (128, 128) if fmt == "fp8" else (16, 16)  # "fp8/16": several scale blocks per matrix
    return [QuantWeight(*fp8_block_quantize(w, block), WeightFormat.fp8(block)) for w in ws]


def assert_clamps_hit(x, w1, w3):
    """Some gate pre-activation is above the limit and some up one beyond +-limit."""
    xf = x.flatten(0, -2).float()  # [N,D]
    gate = torch.einsum("nd,...id->n...i", xf, w1.float())
    up = torch.einsum("nd,...id->n...i", xf, w3.float())
    assert (gate > LIMIT).any() and (up.abs() > LIMIT).any()


@pytest.mark.parametrize(
    "scoring, norm, dtype, n",
    [
        ("sqrtsoftplus", True, torch.bfloat16, 13),  # V4's gate
        ("sigmoid", False, torch.float32, 7),  # no normalisation: the weights are the scores
        ("softmax", True, torch.float32, 5),  # softmax scores are never renormalised
    ],
)
def test_score_gate(scoring, norm, dtype, n, kernel_cache):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, n, D, generator=gen).to(dtype)
    weight = (0.2 * torch.randn(E, D, generator=gen)).to(torch.bfloat16)
    bias = torch.randn(E, generator=gen)  # as large as the scores: it changes the picks
    op = MoeGate(gate="score", top_k=K, route_scale=1.5, scoring_func=scoring, norm_topk_prob=norm)
    logits = x.float() @ weight.float().T  # the router's linear
    ins = [logits, bias]
    got_w, got_idx = run_kernel(op, ins, kernel_cache)
    want_w, want_idx = op.run(ins)
    assert got_idx.dtype == torch.int64 and torch.equal(got_idx, want_idx)
    assert not torch.equal(want_idx, op.run([logits, torch.zeros(E)])[1])  # the bias mattered
    torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-6)


def test_hash_gate(kernel_cache):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 9, D, generator=gen).to(torch.bfloat16)
    ids = torch.tensor([[4, 4, 0, 15, 7, 4, 2, 9, 0]])  # repeated ids: the same expert set
    tid2eid = torch.stack([torch.randperm(E, generator=gen)[:K] for _ in range(16)])  # [V,K]
    op = MoeGate(gate="hash", top_k=6, route_scale=2.5)  # K comes from tid2eid, not top_k
    weight = (0.2 * torch.randn(E, D, generator=gen)).to(torch.bfloat16)
    ins = [x.float() @ weight.float().T, ids, tid2eid]
    got_w, got_idx = run_kernel(op, ins, kernel_cache)
    want_w, want_idx = op.run(ins)
    assert torch.equal(got_idx, want_idx)
    torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", [16, None])  # 16: two chunks of the counting sort
def test_sort(block, kernel_cache):
    idx = routing(13, torch.Generator().manual_seed(3))
    op = MoeSort(num_experts=E)
    params = MoeSortParams(experts=E, block=block) if block else None
    got_order, got_offsets = run_kernel(op, [idx], kernel_cache, params)
    want_order, want_offsets = op.run([idx])
    assert torch.equal(got_offsets, want_offsets) and (want_offsets.diff() == 0).any()
    assert got_order.shape == want_order.shape and torch.equal(got_order, want_order)


@pytest.mark.parametrize("gate, n", [("score", 3), ("score", 9), ("hash", 2), ("hash", 7)])
def test_route(gate, n, kernel_cache):
    """The gate and the sort in one launch (n <= ROUTE_TOKENS) or two: the reference's ids,
    order, offsets and rows (the inverse of order) exactly, its weights to fp32 rounding
    (normalised sums in another order); a token's weights are bitwise the same whichever
    path ran (its first 2 tokens alone take the one-launch path). Hash: expert parallelism,
    a rank of experts 2..5 (local ids 0..3, another rank's pick is group 4 at weight 0)."""
    gen = torch.Generator().manual_seed(8)
    logits = 3 * torch.randn(1, n, E, generator=gen)
    if gate == "score":
        op = MoeRoute(gate="score", top_k=K, route_scale=1.5, num_experts=E)
        extra = [torch.randn(E, generator=gen)]
    else:
        op = MoeRoute(gate="hash", top_k=3, route_scale=2.5, local_experts=4, num_experts=5)
        ids = torch.randint(0, 16, (1, n), generator=gen)
        tid2eid = torch.stack([torch.randperm(E, generator=gen)[:3] for _ in range(16)])
        extra = [ids, tid2eid, torch.tensor([2])]
    got = run_kernel(op, [logits, *extra], kernel_cache)
    want = op.run([logits, *extra])
    assert all(torch.equal(g, w) for g, w in zip(got[1:], want[1:]))
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    head = [logits[:, :2], *(t[:, :2] if t.dim() == 2 and t.shape[0] == 1 else t for t in extra)]
    alone = run_kernel(op, head, kernel_cache)
    assert torch.equal(alone[0], got[0][:, :2]) and torch.equal(alone[1], got[1][:, :2])


@pytest.mark.parametrize(
    "fmt, dtype, n",
    [
        ("bf16", torch.bfloat16, 13),
        ("fp32", torch.float32, 24),  # every token on {3, 6}: groups of 24 span two tiles
        ("fp8", torch.bfloat16, 11),  # the checkpoint's 128x128 blocks (one partial block here)
        ("fp8/16", torch.float32, 5),  # 16x16 blocks: the scale of each block is looked up
        ("fp4", torch.float32, 9),
        ("fp4", torch.bfloat16, 7),
    ],
)
def test_grouped_swiglu(fmt, dtype, n, kernel_cache):
    gen = torch.Generator().manual_seed(4)
    x = (2 * torch.randn(1, n, D, generator=gen)).to(dtype)
    idx = routing(n, gen)
    if n == 24:
        idx[:] = torch.tensor([3, 6])
    order, offsets = MoeSort(num_experts=E).run([idx])
    weights = torch.rand(1, n, K, generator=gen) + 0.5
    ws = experts(fmt, gen)
    ins = [x, order, offsets, weights, *ws]
    ref = dequantized(ins)
    assert_clamps_hit(x, ref[4], ref[6])
    op = GroupedSwiglu(limit=LIMIT)
    (got,) = run_kernel(op, ins, kernel_cache)
    (want,) = op.run(ref)
    assert got.dtype == want.dtype and got.shape == want.shape == (1, n, K, D)
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize(
    "with_shared, dtype",
    [(True, torch.bfloat16), (True, torch.float32), (False, torch.float32)],
)
def test_combine(with_shared, dtype, kernel_cache):
    gen = torch.Generator().manual_seed(5)
    n = 11
    order, _ = MoeSort(num_experts=E).run([routing(n, gen)])
    ins = [torch.randn(1, n, K, D, generator=gen).to(dtype), order]
    if with_shared:
        ins.append(torch.randn(1, n, D, generator=gen).to(dtype))
    op = MoeCombine(with_shared=with_shared)
    (got,) = run_kernel(op, ins, kernel_cache)
    (want,) = op.run(ins)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, **TOL[dtype])
    # given the rows (moe_route's inverse of the order): one launch, bitwise the two-launch
    # result; in fp32 bitwise the reference too, whose arithmetic it is (fp32 sum in pick
    # order, + shared). (The interpreter rounds fp32 -> bf16 toward zero, torch to nearest.)
    rows_op = MoeCombine(with_shared=with_shared, rows=True)
    rows = [ins[0], sorted_rows(order.flatten()).view_as(order), *ins[2:]]
    (got_rows,) = run_kernel(rows_op, rows, kernel_cache)
    (want_rows,) = rows_op.run(rows)
    assert torch.equal(got_rows, got)
    if dtype == torch.float32:
        assert torch.equal(got_rows, want_rows)
    torch.testing.assert_close(want_rows, want, **TOL[dtype])


@pytest.mark.parametrize("fmt, dtype", [("bf16", torch.bfloat16), ("fp8/16", torch.float32)])
def test_shared_swiglu(fmt, dtype, kernel_cache):
    gen = torch.Generator().manual_seed(6)
    x = (2 * torch.randn(2, 9, D, generator=gen)).to(dtype)  # 18 tokens: two row tiles
    ws = experts(fmt, gen, lead=())
    ref = dequantized([x, *ws])
    assert_clamps_hit(x, ref[1], ref[3])
    op = Swiglu(limit=LIMIT)
    (got,) = run_kernel(op, [x, *ws], kernel_cache)
    (want,) = op.run(ref)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, **TOL[dtype])


def test_scheduled_moe_matches_moe(kernel_cache):
    """gate -> sort -> grouped SwiGLU -> combine, all Triton, equals the unfused MoE."""
    gen = torch.Generator().manual_seed(7)
    n = 10
    x = 2 * torch.randn(1, n, D, generator=gen)
    gate = [(0.2 * torch.randn(E, D, generator=gen)), torch.randn(E, generator=gen)]
    ws = experts("fp32", gen)
    attrs = dict(gate="score", top_k=K, route_scale=1.5)
    logits = x @ gate[0].T  # the router's linear
    weights, idx = run_kernel(MoeGate(**attrs), [logits, gate[1]], kernel_cache)
    order, offsets = run_kernel(MoeSort(num_experts=E), [idx], kernel_cache)
    (y,) = run_kernel(GroupedSwiglu(limit=LIMIT), [x, order, offsets, weights, *ws], kernel_cache)
    (got,) = run_kernel(MoeCombine(with_shared=False), [y, order], kernel_cache)
    (want,) = Moe(**attrs, limit=LIMIT).run([x, *gate, *ws])
    torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_weight_format_from_launch():
    """A launch may name dtypes as the IR does; a QuantWeight names its format and scale block."""
    fp8 = WeightFormat.fp8((128, 128))
    shapes = [((1, 5, D), "bf16"), ((1, 5, K), "i64"), ((E + 1,), "i64"), ((1, 5, K), "fp32"),
              ((E, I, D), "bf16", fp8), ((E, D, I), "bf16", fp8),
              ((E, I, D), "bf16", fp8)]  # fmt: skip
    p = jit.params_for("grouped_swiglu", GroupedSwiglu().attrs(), shapes)
    got = (p.act, p.weights, p.scale_block, p.experts, p.top_k)
    assert got == ("bf16", "fp8", (128, 128), E, K)
    mixed = shapes[:-1] + [((E, I, D), "bf16")]
    with pytest.raises(CodegenError, match="mixed formats"):
        jit.params_for("grouped_swiglu", GroupedSwiglu().attrs(), mixed)


@pytest.mark.parametrize("gate", ["score", "hash"])
def test_expert_parallel_rank(gate, kernel_cache):
    """One of two expert-parallel ranks (experts 4..7): its gate maps the picks to local ids
    (other ranks' to an empty group at weight 0), the grouped SwiGLU leaves 0 in that
    group's rows, and the chain equals the rank's share of the unfused MoE."""
    gen = torch.Generator().manual_seed(8)
    n, local = 9, E // 2
    x = 2 * torch.randn(1, n, D, generator=gen)
    weight, first = 0.2 * torch.randn(E, D, generator=gen), torch.tensor([local])
    logits = x @ weight.T  # the router's linear
    if gate == "hash":
        ids = torch.randint(0, 16, (1, n), generator=gen)
        table = torch.stack([torch.randperm(E, generator=gen)[:K] for _ in range(16)])
        gate_ins, moe_ins = [logits, ids, table, first], [x, ids, weight, table, first]
    else:
        bias = torch.randn(E, generator=gen)
        gate_ins, moe_ins = [logits, bias, first], [x, weight, bias, first]
    attrs = dict(gate=gate, top_k=K, route_scale=1.5, local_experts=local)
    weights, idx = run_kernel(MoeGate(**attrs), gate_ins, kernel_cache)
    want_w, want_idx = MoeGate(**attrs).run(gate_ins)
    assert torch.equal(idx, want_idx) and (idx == local).any() and (idx < local).any()
    torch.testing.assert_close(weights, want_w, rtol=1e-5, atol=1e-6)
    order, offsets = run_kernel(MoeSort(num_experts=local + 1), [idx], kernel_cache)
    ws = experts("fp32", gen, lead=(local,))
    ins = [x, order, offsets, weights, *ws]
    (y,) = run_kernel(GroupedSwiglu(limit=LIMIT), ins, kernel_cache)
    torch.testing.assert_close(y, GroupedSwiglu(limit=LIMIT).run(ins)[0], **TOL[torch.float32])
    (got,) = run_kernel(MoeCombine(with_shared=False), [y, order], kernel_cache)
    (want,) = Moe(**attrs, limit=LIMIT).run([*moe_ins, *ws])
    torch.testing.assert_close(got, want, **TOL[torch.float32])
