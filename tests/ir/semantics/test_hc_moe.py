"""Hyper-connection and MoE semantics against two independent oracles: the HF transformers
port (its modules, built from the tiny spec's HF config, fp32, random weights copied in) and
numbers worked out by hand on small inputs.

Where HF differs from the official code (V4_REFERENCE §16) the semantics follow the official
code and the test's tolerance covers exactly that difference; each such test says so.
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as hf

from v4c.ir.semantics.hc import hc_expand, hc_head, hc_post, hc_pre
from v4c.ir.semantics.moe import (
    grouped_swiglu,
    hash_gate,
    moe,
    moe_combine,
    moe_sort,
    score_gate,
    swiglu,
)
from v4c.spec import load_spec
from v4c.spec.config_io import spec_to_config

FP32 = {"rtol": 1e-5, "atol": 1e-5}  # fp32 rounding of reordered sums
EXACT = {"rtol": 0.0, "atol": 1e-6}  # hand-computed values and identical fp32 arithmetic
BF16 = {"rtol": 1.6e-2, "atol": 1e-5}  # one bf16 ulp on the rounded output


def _assert_close_fp32_scaled(y, ref):
    """fp32 rounding of a long reordered sum, judged against the output's scale: experts
    whose clamped activations reach 100 cancel down to small entries, so atol = 1e-6 max|ref|."""
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def spec():
    return load_spec("tiny")


def _config(spec, **overrides) -> transformers.DeepseekV4Config:
    return transformers.DeepseekV4Config(**{**spec_to_config(spec, "hf"), **overrides})


@pytest.fixture(scope="module")
def config(spec):
    return _config(spec)


def _hc_params(n: int, d: int, rows: int):
    """fn scaled so the mix logits are O(1), base and scale O(1)."""
    fn = torch.randn(rows, n * d) / math.sqrt(n * d)
    return fn, torch.randn(rows), torch.rand(3 if rows > n else 1) + 0.5


def _hc_module(config):
    n, d = config.hc_mult, config.hidden_size
    fn, base, scale = _hc_params(n, d, (2 + n) * n)
    mod = hf.DeepseekV4HyperConnection(config)
    with torch.no_grad():
        mod.fn.copy_(fn), mod.base.copy_(base), mod.scale.copy_(scale)
    return mod, (fn, base, scale)


def _hc_kw(config):
    return {
        "sinkhorn_iters": config.hc_sinkhorn_iters,
        "eps": config.hc_eps,
        "norm_eps": config.rms_norm_eps,
    }


# --- hyper-connections -------------------------------------------------------------------


@pytest.mark.parametrize("hc_eps", [None, 0.1])  # the spec's 1e-6, and one large enough to show
def test_hc_pre_matches_hf_fp32(spec, hc_eps):
    config = _config(spec, **({} if hc_eps is None else {"hc_eps": hc_eps}))
    mod, params = _hc_module(config)
    X = torch.randn(2, 3, config.hc_mult, config.hidden_size)
    post_ref, comb_ref, x_ref = mod(X)
    x, post, comb = hc_pre(X, *params, **_hc_kw(config))
    # fp32: same math, HF normalises x before the matmul (official after): FP32 tolerance
    torch.testing.assert_close(x, x_ref, **FP32)
    torch.testing.assert_close(post, post_ref, **FP32)
    torch.testing.assert_close(comb, comb_ref, **FP32)
    assert post.dtype == comb.dtype == torch.float32


def test_hc_pre_matches_hf_bf16(config):
    mod, params = _hc_module(config)
    X = torch.randn(2, 3, config.hc_mult, config.hidden_size).bfloat16()
    post_ref, comb_ref, x_ref = mod(X)
    x, post, comb = hc_pre(X, *params, **_hc_kw(config))
    assert x.dtype == torch.bfloat16
    torch.testing.assert_close(x, x_ref, **BF16)  # bf16 output: one ulp
    torch.testing.assert_close(post, post_ref, **FP32)  # post/comb stay fp32 on both sides
    torch.testing.assert_close(comb, comb_ref, **FP32)


def _hand_hc_pre(iters: int, eps: float):
    """n=2, fn=0 so the mix logits vanish and base alone sets pre, post and comb:
    pre logits (0, ln3), post logits (0, ln3), comb logits [[0, ln3], [0, 0]]."""
    ln3 = math.log(3.0)
    base = torch.tensor([0.0, ln3, 0.0, ln3, 0.0, ln3, 0.0, 0.0])
    X = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]]).view(1, 1, 2, 3)
    return X, hc_pre(
        X, torch.zeros(8, 6), base, torch.ones(3), sinkhorn_iters=iters, eps=eps, norm_eps=1e-6
    )


def test_hc_pre_sinkhorn_by_hand():
    # softmax rows: [1/4, 3/4], [1/2, 1/2]; column sums 3/4, 5/4 -> [[1/3, 3/5], [2/3, 2/5]]
    X, (x, post, comb) = _hand_hc_pre(iters=1, eps=0.0)
    torch.testing.assert_close(comb[0, 0], torch.tensor([[1 / 3, 3 / 5], [2 / 3, 2 / 5]]), **EXACT)
    # pre = sigmoid(0, ln3) = (1/2, 3/4); post = 2 sigmoid(0, ln3) = (1, 3/2)
    torch.testing.assert_close(post[0, 0], torch.tensor([1.0, 1.5]), **EXACT)
    torch.testing.assert_close(x[0, 0], 0.5 * X[0, 0, 0] + 0.75 * X[0, 0, 1], **EXACT)
    # one more (row, column) round: rows 14/15, 16/15 -> [[5/14, 9/14], [5/8, 3/8]];
    # columns 55/56, 57/56 -> [[4/11, 12/19], [7/11, 7/19]] (ends on a column step)
    _, (_, _, comb) = _hand_hc_pre(iters=2, eps=0.0)
    torch.testing.assert_close(
        comb[0, 0], torch.tensor([[4 / 11, 12 / 19], [7 / 11, 7 / 19]]), **EXACT
    )


def test_hc_pre_eps_placement_by_hand():
    # eps 0.5: softmax + eps -> [[3/4, 5/4], [1, 1]]; columns 7/4 + eps, 9/4 + eps
    # -> [[1/3, 5/11], [4/9, 4/11]]; pre = sigmoid + eps = (1, 5/4); post has no eps
    X, (x, post, comb) = _hand_hc_pre(iters=1, eps=0.5)
    torch.testing.assert_close(
        comb[0, 0], torch.tensor([[1 / 3, 5 / 11], [4 / 9, 4 / 11]]), **EXACT
    )
    torch.testing.assert_close(post[0, 0], torch.tensor([1.0, 1.5]), **EXACT)
    torch.testing.assert_close(x[0, 0], X[0, 0, 0] + 1.25 * X[0, 0, 1], **EXACT)


def test_hc_pre_comb_is_doubly_stochastic(config):
    n, d = config.hc_mult, config.hidden_size
    fn, base, scale = _hc_params(n, d, (2 + n) * n)
    X = torch.randn(4, 16, n, d)
    _, _, comb = hc_pre(X, fn, base, scale, sinkhorn_iters=20, eps=1e-6, norm_eps=1e-6)
    # 20 iterations from comb logits of spread O(1): fp32, sums within 1e-3 of 1 (columns to
    # ~1e-6, the last step normalises them; rows to ~2e-4), entries >= 0. Much more peaked
    # logits (spread ~10) converge slower: rows stay ~5e-2 off after 20 iterations.
    ones = torch.ones(4, 16, n)
    torch.testing.assert_close(comb.sum(-1), ones, rtol=0, atol=1e-3)
    torch.testing.assert_close(comb.sum(-2), ones, rtol=0, atol=1e-3)
    assert (comb >= 0).all()


def test_hc_post_by_hand():
    # X'_k = post_k a + sum_j comb[j,k] X_j: the sum runs over comb's FIRST index
    a = torch.tensor([1.0, 2.0]).view(1, 1, 2)
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    post = torch.tensor([1.0, 0.5]).view(1, 1, 2)
    comb = torch.tensor([[0.9, 0.1], [0.3, 0.7]]).view(1, 1, 2, 2)
    out = hc_post(a, X, post, comb)
    torch.testing.assert_close(out[0, 0], torch.tensor([[1.9, 2.3], [0.6, 1.7]]), **EXACT)


class _Sublayer(torch.nn.Module):
    """A stand-in attention/MLP for HF's decoder layer: a fixed nonlinear map of x."""

    def __init__(self, d: int, returns_tuple: bool):
        super().__init__()
        self.w = torch.randn(d, d) / math.sqrt(d)
        self.returns_tuple = returns_tuple

    def forward(self, x, **_):
        y = torch.tanh(x @ self.w.to(x.dtype))
        return (y, None) if self.returns_tuple else y


@pytest.mark.parametrize(
    "dtype, tol",
    [
        (torch.float32, FP32),
        # bf16: HF rounds post/comb to bf16 before mixing (§16.4, official keeps fp32); a
        # relative 2^-8 on each weight, carried through both sublayers, plus output ulps
        (torch.bfloat16, {"rtol": 3e-2, "atol": 3e-2}),
    ],
)
def test_hc_block_matches_hf_decoder_layer(config, dtype, tol):
    """hc_pre -> sublayer -> hc_post twice, as HF's decoder layer wires them."""
    layer = hf.DeepseekV4DecoderLayer(config, layer_idx=0)
    attn_hc, attn_p = _hc_module(config)
    ffn_hc, ffn_p = _hc_module(config)
    attn, mlp = _Sublayer(config.hidden_size, True), _Sublayer(config.hidden_size, False)
    layer.attn_hc, layer.ffn_hc, layer.self_attn, layer.mlp = attn_hc, ffn_hc, attn, mlp
    layer.input_layernorm = layer.post_attention_layernorm = torch.nn.Identity()
    X = torch.randn(2, 3, config.hc_mult, config.hidden_size).to(dtype)
    ref = layer(X)
    x, post, comb = hc_pre(X, *attn_p, **_hc_kw(config))
    X = hc_post(attn(x)[0], X, post, comb)
    x, post, comb = hc_pre(X, *ffn_p, **_hc_kw(config))
    out = hc_post(mlp(x), X, post, comb)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref, **tol)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, FP32), (torch.bfloat16, BF16)])
def test_hc_head_matches_hf(config, dtype, tol):
    n, d = config.hc_mult, config.hidden_size
    fn, base, scale = _hc_params(n, d, n)
    mod = hf.DeepseekV4HyperHead(config)
    with torch.no_grad():
        mod.hc_fn.copy_(fn), mod.hc_base.copy_(base), mod.hc_scale.copy_(scale)
    X = torch.randn(2, 3, n, d).to(dtype)
    y = hc_head(X, fn, base, scale, eps=config.hc_eps, norm_eps=config.rms_norm_eps)
    assert y.dtype == dtype
    torch.testing.assert_close(y, mod(X), **tol)


def test_hc_expand_by_hand():
    h = torch.tensor([[[1.0, 2.0]]]).bfloat16()  # [1,1,2]
    X = hc_expand(h, 3)
    assert X.shape == (1, 1, 3, 2) and X.dtype == torch.bfloat16
    assert torch.equal(X[0, 0], torch.tensor([[1.0, 2.0]] * 3).bfloat16())
    X[0, 0, 0, 0] = 7  # a copy: the streams diverge after the first block
    assert h[0, 0, 0] == 1 and X[0, 0, 1, 0] == 1


# --- MoE: gates -------------------------------------------------------------------------


def _dims(config):
    """E experts, D hidden, K top-k, V vocabulary."""
    c = config
    return c.num_local_experts, c.hidden_size, c.num_experts_per_tok, c.vocab_size


def _tid2eid(E: int, K: int, V: int) -> torch.Tensor:
    """A hash table [V,K] of K distinct experts per token id (64 rows, tiled)."""
    return torch.stack([torch.randperm(E)[:K] for _ in range(64)]).repeat(V // 64, 1)


def _by_expert(weights, idx):
    """Rows reordered by expert id: HF's top-k is unsorted, ours is by biased score."""
    order = idx.argsort(dim=-1)
    return weights.gather(1, order), idx.gather(1, order)


def test_score_gate_matches_hf_topk_router(config):
    E, D = config.num_local_experts, config.hidden_size
    router = hf.DeepseekV4TopKRouter(config)
    weight, bias = torch.randn(E, D) / math.sqrt(D), torch.randn(E) * 0.5
    with torch.no_grad():
        router.weight.copy_(weight), router.e_score_correction_bias.copy_(bias)
    x = torch.randn(32, D)
    _, w_ref, idx_ref = router(x)
    w, idx = score_gate(
        x, weight, bias, top_k=config.num_experts_per_tok, route_scale=config.routed_scaling_factor
    )
    assert w.dtype == torch.float32 and idx.dtype == torch.int64
    w, idx = _by_expert(w, idx)
    w_ref, idx_ref = _by_expert(w_ref, idx_ref)
    assert torch.equal(idx, idx_ref)
    # HF adds 1e-20 to the normaliser (official: none); with sums >= ~1 that is far below
    # fp32 resolution, so the weights agree to fp32 rounding
    torch.testing.assert_close(w, w_ref, **FP32)


def _logits_gate(z):
    """x = [1] and a [E,1] weight holding the wanted logits z."""
    return torch.ones(1, 1), torch.tensor(z).view(-1, 1)


def test_score_gate_sqrtsoftplus_by_hand():
    # logits chosen so softplus = (9, 4, 1, 1/4): sqrtsoftplus scores s = (3, 2, 1, 1/2)
    x, weight = _logits_gate([math.log(math.expm1(a)) for a in (9.0, 4.0, 1.0, 0.25)])
    w, idx = score_gate(x, weight, torch.zeros(4), top_k=2, route_scale=1.5)
    assert idx.tolist() == [[0, 1]]
    torch.testing.assert_close(w, torch.tensor([[3 / 5 * 1.5, 2 / 5 * 1.5]]), **EXACT)
    # bias (0, 0, 5, 0): s + b = (3, 2, 6, 1/2) picks experts 2 and 0; weights from s only
    w, idx = score_gate(x, weight, torch.tensor([0.0, 0.0, 5.0, 0.0]), top_k=2, route_scale=1.5)
    assert idx.tolist() == [[2, 0]]
    torch.testing.assert_close(w, torch.tensor([[1 / 4 * 1.5, 3 / 4 * 1.5]]), **EXACT)
    w, _ = score_gate(x, weight, torch.zeros(4), top_k=2, route_scale=1.5, norm_topk_prob=False)
    torch.testing.assert_close(w, torch.tensor([[3 * 1.5, 2 * 1.5]]), **EXACT)


def test_score_gate_sigmoid_and_softmax_by_hand():
    ln3 = math.log(3.0)
    x, weight = _logits_gate([ln3, 0.0, -ln3])
    # sigmoid: (3/4, 1/2, 1/4), top-2 normalised -> (3/5, 2/5)
    w, idx = score_gate(x, weight, torch.zeros(3), top_k=2, route_scale=2.0, scoring_func="sigmoid")
    assert idx.tolist() == [[0, 1]]
    torch.testing.assert_close(w, torch.tensor([[6 / 5, 4 / 5]]), **EXACT)
    # softmax: (9, 3, 1)/13 over all experts; the top-2 are NOT renormalised
    w, idx = score_gate(x, weight, torch.zeros(3), top_k=2, route_scale=2.0, scoring_func="softmax")
    assert idx.tolist() == [[0, 1]]
    torch.testing.assert_close(w, torch.tensor([[18 / 13, 6 / 13]]), **EXACT)


def test_hash_gate_matches_hf_hash_router(config):
    E, D, K, V = _dims(config)
    router = hf.DeepseekV4HashRouter(config)
    weight, tid2eid = torch.randn(E, D) / math.sqrt(D), _tid2eid(E, K, V)
    with torch.no_grad():
        router.weight.copy_(weight), router.tid2eid.copy_(tid2eid)
    x, ids = torch.randn(32, D), torch.randint(0, V, (32,))
    _, w_ref, idx_ref = router(x, ids)
    w, idx = hash_gate(x, ids, weight, tid2eid, route_scale=config.routed_scaling_factor)
    assert torch.equal(idx, tid2eid[ids])  # the table picks, in the table's order
    assert torch.equal(idx, idx_ref)
    torch.testing.assert_close(w, w_ref, **FP32)  # HF's +1e-20: below fp32 resolution


# --- MoE: experts -----------------------------------------------------------------------


def _expert_weights(config, e: int | None = None):
    """w1, w2, w3 scaled so that many pre-activations exceed the clamp limit 10."""
    D, I = config.hidden_size, config.intermediate_size
    lead = () if e is None else (e,)
    w1, w2, w3 = torch.randn(*lead, I, D), torch.randn(*lead, D, I), torch.randn(*lead, I, D)
    return w1 * 0.6, w2 * 0.1, w3 * 0.6


def test_swiglu_matches_hf_mlp(config):
    mlp = hf.DeepseekV4MLP(config)  # the shared expert
    w1, w2, w3 = _expert_weights(config)
    with torch.no_grad():
        mlp.gate_proj.weight.copy_(w1), mlp.down_proj.weight.copy_(w2), mlp.up_proj.weight.copy_(w3)
    x = torch.randn(16, config.hidden_size)
    assert ((x @ w1.T) > 10).any() and ((x @ w3.T).abs() > 10).any()  # the clamps bite
    y = swiglu(x, w1, w2, w3, limit=config.swiglu_limit)
    torch.testing.assert_close(y, mlp(x), **FP32)


def test_swiglu_clamp_by_hand():
    one = torch.ones(1, 1)

    def run(v, limit, scale=None):
        return swiglu(torch.tensor([[v]]), one, one, one, limit=limit, scale=scale).item()

    def silu(v):
        return v / (1 + math.exp(-v))

    assert run(12.0, 10.0) == pytest.approx(silu(10.0) * 10.0, rel=1e-6)  # both clamped to 10
    assert run(-12.0, 10.0) == pytest.approx(silu(-12.0) * -10.0, rel=1e-6)  # gate: no floor
    assert run(12.0, 0.0) == pytest.approx(silu(12.0) * 12.0, rel=1e-6)  # limit 0: no clamp
    assert run(2.0, 10.0, torch.tensor([0.25])) == pytest.approx(0.25 * silu(2.0) * 2.0, rel=1e-6)


def _hf_experts(config, w1, w2, w3):
    experts = hf.DeepseekV4Experts(config)
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.cat([w1, w3], dim=1))  # [E, 2I, D], gate rows first
        experts.down_proj.copy_(w2)
    return experts


def _routing(config, n: int):
    E, D, K, _ = _dims(config)
    x, weight, bias = torch.randn(n, D), torch.randn(E, D) / math.sqrt(D), torch.randn(E) * 0.5
    return x, score_gate(x, weight, bias, top_k=K, route_scale=config.routed_scaling_factor)


def test_moe_matches_hf_experts(config):
    w1, w2, w3 = _expert_weights(config, config.num_local_experts)
    x, (weights, idx) = _routing(config, 32)
    ref = _hf_experts(config, w1, w2, w3)(x, idx, weights)
    y = moe(x, weights, idx, w1, w2, w3, limit=config.swiglu_limit)
    # HF weighs after down_proj, official before w2: equal in exact arithmetic, fp32 rounding
    _assert_close_fp32_scaled(y, ref)


@pytest.mark.parametrize("layer_idx", [0, 2])  # hash layer, score layer
def test_moe_block_matches_hf_sparse_moe_block(config, layer_idx):
    E, D, K, V = _dims(config)
    block = hf.DeepseekV4SparseMoeBlock(config, layer_idx)
    gate_w, bias, tid2eid = (
        torch.randn(E, D) / math.sqrt(D),
        torch.randn(E) * 0.5,
        _tid2eid(E, K, V),
    )
    w1, w2, w3 = _expert_weights(config, E)
    s1, s2, s3 = _expert_weights(config)
    with torch.no_grad():
        block.gate.weight.copy_(gate_w)
        if block.is_hash:
            block.gate.tid2eid.copy_(tid2eid)
        else:
            block.gate.e_score_correction_bias.copy_(bias)
        block.experts = _hf_experts(config, w1, w2, w3)
        sh = block.shared_experts
        sh.gate_proj.weight.copy_(s1), sh.down_proj.weight.copy_(s2), sh.up_proj.weight.copy_(s3)
    x, ids = torch.randn(2, 8, D), torch.randint(0, V, (2, 8))
    ref = block(x, input_ids=ids).view(16, D)
    flat, scale = x.view(16, D), config.routed_scaling_factor
    if block.is_hash:
        weights, idx = hash_gate(flat, ids.view(-1), gate_w, tid2eid, route_scale=scale)
    else:
        weights, idx = score_gate(flat, gate_w, bias, top_k=K, route_scale=scale)
    limit = config.swiglu_limit
    y = moe(flat, weights, idx, w1, w2, w3, limit=limit) + swiglu(flat, s1, s2, s3, limit=limit)
    _assert_close_fp32_scaled(y, ref)  # weight before/after w2 (§16.3): fp32 rounding only


# --- MoE: dispatch schedule -------------------------------------------------------------


def test_moe_sort_by_hand():
    # slots 0..3 pick experts 2, 0, 0, 1; expert 3 gets none
    order, offsets = moe_sort(torch.tensor([[2, 0], [0, 1]]), 4)
    assert order.tolist() == [1, 2, 3, 0] and offsets.tolist() == [0, 2, 3, 4, 4]
    assert order.dtype == offsets.dtype == torch.int64


@pytest.mark.parametrize("dtype, tol", [(torch.float32, EXACT), (torch.bfloat16, BF16)])
def test_dispatch_schedule_equals_moe(config, dtype, tol):
    E, K, N = config.num_local_experts, config.num_experts_per_tok, 12
    used = torch.tensor([0, 1, 2, 4, 5, 6])  # experts 3 and 7 receive no token
    idx = torch.stack([used[torch.randperm(len(used))[:K]] for _ in range(N)])
    weights = torch.rand(N, K) + 0.1
    w1, w2, w3 = (w.to(dtype) for w in _expert_weights(config, E))
    x = torch.randn(N, config.hidden_size).to(dtype)
    order, offsets = moe_sort(idx, E)
    assert (offsets[4] - offsets[3]).item() == 0 and (offsets[8] - offsets[7]).item() == 0
    y_sorted = grouped_swiglu(x, order, offsets, weights, w1, w2, w3, limit=config.swiglu_limit)
    y = moe_combine(y_sorted, order, N)
    ref = moe(x, weights, idx, w1, w2, w3, limit=config.swiglu_limit)
    assert y_sorted.shape == (N * K, config.hidden_size) and y.dtype == dtype
    # the same per-expert arithmetic in another order: fp32 1e-6; bf16 one ulp
    torch.testing.assert_close(y, ref, **tol)
