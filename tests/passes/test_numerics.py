"""numerics: official — the §12 roundings in the graph, each checked against its formula
(the formulas themselves are checked on hand-computed values in tests/runtime/test_quant.py)."""

from __future__ import annotations

import pytest
import torch

from tests.passes.conftest import graph_before, run_steps
from v4c.ir.ops.compressor import Compressor
from v4c.ir.ops.core import QuantSim
from v4c.ir.semantics.moe import swiglu
from v4c.ir.semantics.quant import act_quant_fp8, fp4_sim, fp8_sim, hadamard
from v4c.passes.base import CompileOptions, PassContext
from v4c.passes.simulate_numerics import simulate_numerics

OFFICIAL = CompileOptions(logits="all", numerics="official")


def official_graph(spec):
    graph = graph_before(spec, "simulate_numerics")
    result = simulate_numerics(graph, PassContext(spec, OFFICIAL))
    return graph, result


def test_plain_changes_nothing(tiny):
    graph = graph_before(tiny, "simulate_numerics")
    assert not simulate_numerics(graph, PassContext(tiny, CompileOptions())).changed


def test_official_rounds_every_fp8_gemm_input(tiny):
    graph, result = official_graph(tiny)
    # 5 blocks x (wq_a, wq_b, wkv, wo_b) + e_proj + h_proj + the 2 CSA indexers' wq_b
    assert result.stats["fp8_gemm_inputs"] == 24 and result.stats["kv"] == 5
    index_q = graph.operands(graph.operands("L01.attn.indexer")[0].node)[0]
    assert index_q == graph.operands("L01.attn.wq_b")[0]  # one FP8 rounding of qr, shared
    for node in graph.nodes():
        operands = graph.operands(node.id)
        if node.op.kind == "linear" and not node.id.endswith((".lm_head", ".wq_a_idx")):
            tensor = graph.node(operands[1].node).op.tensor  # bf16: the head, the compressors',
            # the indexer's weights_proj
            fp8_weight = (
                not tensor.startswith("head.")
                and ".compressor." not in tensor
                and not tensor.endswith("indexer.weights_proj.weight")
            )
            assert node.op.act_quant == fp8_weight, node.id
        if node.op.kind == "sparse_attention":
            kv = graph.node(operands[1].node)
            assert (kv.op.kind, kv.op.block, kv.op.dims) == ("quant_sim", 64, 64)
    assert graph.node("L01.attn.compressor").op.sim == "fp8"
    assert graph.node("L01.attn.indexer.compressor").op.sim == "fp4"
    assert graph.node("L01.attn.indexer").op.sim and graph.node("L03.ffn.moe").op.act_quant
    assert graph.node("L03.ffn.shared0").op.act_quant
    # the bf16 rounding points inside ops (V4_REFERENCE §12.1)
    assert result.stats["q_norms"] == 5 and graph.node("L00.attn.q_head_norm").op.inline
    assert not any(n.op.inline for n in graph.nodes() if n.op.kind == "rms_norm" and n.op.weighted)
    assert all(n.op.round_probs for n in graph.nodes() if n.op.kind == "sparse_attention")
    # wo_a (used dequantised in bf16 officially) keeps its input
    assert graph.node(graph.operands("L00.attn.wo_a")[0].node).op.kind == "rope"


def test_official_outputs_are_close_to_plain(tiny, tiny_weights):
    plain = run_steps(graph_before(tiny, "simulate_numerics"), tiny_weights)
    official = run_steps(official_graph(tiny)[0], tiny_weights)
    for p, o in zip(plain, official):
        rel = ((p["logits"] - o["logits"]).abs().max() / p["logits"].abs().max()).item()
        assert 1e-4 < rel < 0.1  # the rounding is on, and it is a rounding


def test_quant_sim_on_known_values():
    # amax 1 -> scale 2^ceil(log2(1/448)) = 2^-8; 0.3 * 256 = 76.8 -> e4m3 80 -> 0.3125
    x = torch.zeros(1, 1, 256)
    x[0, 0, 0], x[0, 0, 1], x[0, 0, 128] = 1.0, 0.3, 0.3
    (y,) = QuantSim(block=128).run([x])
    assert y[0, 0, :2].tolist() == [1.0, 0.3125]
    # second block: amax 0.3 -> scale 2^ceil(log2(0.3/448)) = 2^-10; 0.3 * 1024 = 307.2 -> 320
    assert y[0, 0, 128].item() == 320 / 1024
    (z,) = QuantSim(block=64, dims=64).run([x])  # only the first 64 channels are rounded
    assert z[0, 0, 1].item() == 0.3125 and z[0, 0, 128].item() == pytest.approx(0.3)


def test_compressor_rounds_only_the_new_entries(tiny):
    gen = torch.Generator().manual_seed(0)
    d, c, m = 64, 32, 4
    x = torch.randn(1, 9, d, generator=gen)
    w = [torch.randn(2 * c, d, generator=gen) / 8, torch.randn(2 * c, d, generator=gen) / 8,
         torch.randn(m, 2 * c, generator=gen), 1 + torch.randn(c, generator=gen) / 10]  # fmt: skip

    def run(sim, steps):
        state = [
            torch.zeros(1, 2 * m, 2 * c),
            torch.full((1, 2 * m, 2 * c), float("-inf")),
            torch.zeros(1, 4, c),
        ]
        op = Compressor(rope_dim=8, theta=160000.0, ratio=m, sim=sim)
        for lo, hi in steps:
            pos = torch.arange(lo, hi)[None]
            k, z = (x[:, lo:hi].float() @ p.float().T for p in w[:2])
            op.run([k, z, pos, torch.tensor([0]), *w[2:], *state])
        return state[2]

    for steps in ([(0, 9)], [(0, 5), (5, 9)]):  # an entry from an earlier step is not rounded twice
        plain = run("none", steps)
        fp8 = run("fp8", steps)
        torch.testing.assert_close(
            fp8[..., :24], fp8_sim(plain[..., :24], block=64), rtol=0, atol=0
        )
        torch.testing.assert_close(fp8[..., 24:], plain[..., 24:], rtol=0, atol=0)
        fp4 = run("fp4", steps)
        torch.testing.assert_close(fp4, fp4_sim(hadamard(plain), block=32), rtol=0, atol=0)


def test_expert_gemm_inputs_are_rounded():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 128, generator=gen)
    w1, w3 = torch.randn(64, 128, generator=gen) / 11, torch.randn(64, 128, generator=gen) / 11
    w2 = torch.randn(128, 64, generator=gen) / 8
    scale = torch.tensor([0.5, 1.0, 2.0])
    got = swiglu(x, w1, w2, w3, limit=10.0, scale=scale, act_quant=True)
    xq = act_quant_fp8(x)
    h = torch.nn.functional.silu((xq @ w1.T).clamp(max=10)) * (xq @ w3.T).clamp(-10, 10)
    want = act_quant_fp8(scale[:, None] * h) @ w2.T
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(
        got, swiglu(x, w1, w2, w3, limit=10.0, scale=scale), rtol=1e-5, atol=1e-5
    )
