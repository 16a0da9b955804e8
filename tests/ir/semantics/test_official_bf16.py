"""numerics: official with bf16 activations rounds to bf16 where the official code does
(V4_REFERENCE §12.1), on hand values: each case is small enough to follow by hand, and each
shows the official value and that plain numerics (fp32 there) gives another one."""

from __future__ import annotations

import math

import torch

from v4c.ir.semantics.attention import sparse_attention
from v4c.ir.semantics.compressor import round_entries
from v4c.ir.semantics.indexer import indexer_score, indexer_topk
from v4c.ir.semantics.moe import swiglu
from v4c.ir.semantics.norm import inline_q_norm, rms_norm
from v4c.ir.semantics.quant import act_quant_fp8, fp4_sim, hadamard

BF16 = torch.bfloat16


def test_attention_probabilities_are_bf16_before_pv():
    """Two keys k1 = [1, 0] (this token, logit 0 = the max) and k2 = [0, 1] (the cached
    token, logit -1 with q = [0, -1] and scale 1), no sink: p = [1, e^-1], and the official
    kernel rounds p to bf16 (e^-1 = 0.36787944 -> 0.3671875) for P·V, dividing by the fp32
    sum 1 + e^-1. Official: [1, 0.3671875] / 1.36787944 = [0.7310586, 0.2684100] -> bf16
    [0.73046875, 0.267578125]; plain: [0.7310586, 0.2689414] -> [0.73046875, 0.26953125]."""

    def attend(round_probs: bool) -> list[float]:
        cache = torch.zeros(1, 4, 2, dtype=BF16)
        cache[0, 0] = torch.tensor([0.0, 1.0])  # position 0 in slot 0; the others empty
        out = sparse_attention(
            torch.tensor([[[[0.0, -1.0]]]], dtype=BF16), torch.tensor([[[1.0, 0.0]]], dtype=BF16),
            torch.tensor([[1]]), torch.tensor([-math.inf]), slots=torch.tensor([0]),
            window_cache=cache, compressed=None, ratio=0, topk_idx=None, softmax_scale=1.0,
            round_probs=round_probs,
        )  # fmt: skip
        return out.flatten().tolist()

    assert attend(True) == [0.73046875, 0.267578125]
    assert attend(False) == [0.73046875, 0.26953125]


def _projected(qr, x, positions, wq_b, weights_proj, keys):
    """The indexer's operands as the official graph makes them: the wq_b linear reads qr
    rounded to FP8 (a FP8 weight's input), both linears write the activation dtype."""
    q = (act_quant_fp8(qr).float() @ wq_b.float().T).to(qr.dtype)
    return q, (x.float() @ weights_proj.float().T).to(x.dtype), positions, keys


def _indexer_inputs():
    """Two index heads of dim 4 whose q is exactly e0 and e1 after the Hadamard (q before it is
    H e0 = [.5, .5, .5, .5] and H e1 = [.5, -.5, .5, -.5]; FP4 keeps 1 exactly); entry 0's key
    is e0, entry 1's is e1, so score(s) = w_s * scale. The raw head weights are 1 and
    1 + 2^-10 (x = e0 picks column 0 of weights_proj)."""
    q_lora, dim = 128, 8
    qr = torch.zeros(1, 1, q_lora, dtype=BF16)
    qr[..., 0] = 1.0  # FP8-exact
    wq_b = torch.zeros(8, q_lora)
    wq_b[:, 0] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, -0.5])
    x = torch.zeros(1, 1, dim, dtype=BF16)
    x[..., 0] = 1.0
    weights_proj = torch.zeros(2, dim)
    weights_proj[:, 0] = torch.tensor([1.0, 1.0 + 2**-10])
    keys = torch.zeros(1, 2, 4, dtype=BF16)
    keys[0, 0, 0] = keys[0, 1, 1] = 1.0
    rope = dict(rope_freqs=torch.zeros(1))  # RoPE on dims 2..3 at angle 0: the identity
    return (qr, x, torch.tensor([[7]]), wq_b, weights_proj, keys), rope


def test_indexer_weights_and_scores_are_bf16_and_ties_go_low():
    """scale = (4 * 2)^-1/2 = 0.35355339. Official (bf16 activations): w = bf16(bf16(1 +
    2^-10) * scale) = bf16(0.35355339) = 0.353515625 for both heads, so both entries score
    0.353515625: a tie, and the top-1 is the lower entry, 0. Kept in fp32 (fp32 activations,
    the same FP8/FP4 rounding): 0.35355339 < 0.35389864, so entry 1 wins."""
    args, rope = _indexer_inputs()
    fp32 = tuple(a.float() if a.is_floating_point() else a for a in args)
    official = indexer_score(*_projected(*args), **rope, sim=True)
    assert official.flatten().tolist() == [0.353515625, 0.353515625]
    scale = 8**-0.5
    torch.testing.assert_close(
        indexer_score(*_projected(*fp32), **rope, sim=True).flatten(),
        torch.tensor([scale, scale * (1 + 2**-10)]), rtol=1e-6, atol=0,
    )  # fmt: skip
    pick = dict(topk=1, ratio=4, rope_dim=2, slots=torch.tensor([0]), **rope)  # sees 0 and 1
    assert indexer_topk(*_projected(*args), **pick, sim=True).tolist() == [[[0]]]
    assert indexer_topk(*_projected(*fp32), **pick, sim=True).tolist() == [[[1]]]


def test_indexer_q_is_bf16_before_and_after_the_hadamard():
    """One head of dim 4, wq_b's output q = [-0.248046875, 3.568359375, 3.376953125, 3.3125]
    (qr = e0 picks column 0 of wq_b). Official: q in bf16 = [-0.248046875, 3.5625, 3.375,
    3.3125]; its Hadamard q0 = 10.001953125 / 2 = 5.0009766 -> bf16 5.0, which FP4 (scale 1)
    rounds to 4 (a tie, to the even code). The fp32 q would give q0 = 5.0048828 -> 6.
    Key e0 and weight bf16(1 * 4^-1/2) = 0.5: the score is 4 * 0.5 = 2 (fp32 q: 3)."""
    q_lora, dim = 128, 8
    q = [-0.248046875, 3.568359375, 3.376953125, 3.3125]
    qr, x = torch.zeros(1, 1, q_lora, dtype=BF16), torch.zeros(1, 1, dim, dtype=BF16)
    qr[..., 0] = x[..., 0] = 1.0
    wq_b, weights_proj = torch.zeros(4, q_lora), torch.zeros(1, dim)
    wq_b[:, 0], weights_proj[0, 0] = torch.tensor(q), 1.0
    keys = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]], dtype=BF16)
    args = (qr, x, torch.tensor([[7]]), wq_b, weights_proj, keys)
    assert indexer_score(*_projected(*args), rope_freqs=torch.zeros(1), sim=True).item() == 2.0
    assert fp4_sim(hadamard(torch.tensor(q)))[0].item() == 6.0  # the fp32 q's FP4 q0


def test_inline_q_norm_rounds_each_op():
    """q = [1, 1.0078125, 1, 1] (bf16). Official, op by op in bf16: q² = [1, 1.015625
    (from 1.01568604), 1, 1]; mean = 1.00390625 -> 1.0 (a tie, to even); + 1e-6 -> 1.0;
    rsqrt -> 1.0; q * 1 = q. The fp32 norm: rsqrt(1.00392151) = 0.99804497, so
    [0.99609375, 1.0078125, 0.99609375, 0.99609375] after the one cast."""
    q = torch.tensor([1.0, 1.0078125, 1.0, 1.0], dtype=BF16)
    assert inline_q_norm(q, 1e-6).tolist() == [1.0, 1.0078125, 1.0, 1.0]
    assert rms_norm(q, None, 1e-6).tolist() == [0.99609375, 1.0078125, 0.99609375, 0.99609375]
    q32 = q.float()  # fp32 activations: the same as the fp32 norm
    assert torch.equal(inline_q_norm(q32, 1e-6), rms_norm(q32, None, 1e-6))


def test_expert_w1_w3_outputs_are_bf16_before_the_swiglu():
    """x = e0 (FP8-exact), w1 x = 1.044921875 and w3 x = 5, w2 passes h through. Official:
    the w1 GEMM writes bf16, gate = 1.046875; h = silu(1.046875) * 5 = 3.87424 -> bf16
    3.875 -> FP8 (scale 2^-6: 248, a tie between 240 and 256, to even) 4.0, and y = 4.0.
    With the fp32 gate: h = silu(1.044921875) * 5 = 3.86509 -> bf16 3.859375 -> FP8 (247 ->
    240) 3.75."""
    x = torch.zeros(1, 128, dtype=BF16)
    x[0, 0] = 1.0
    w1, w3, w2 = torch.zeros(1, 128), torch.zeros(1, 128), torch.zeros(128, 1)
    w1[0, 0], w3[0, 0], w2[0, 0] = 1.044921875, 5.0, 1.0
    y = swiglu(x, w1, w2, w3, limit=10.0, act_quant=True)
    assert y[0, 0].item() == 4.0 and not y[0, 1:].any()
    h32 = torch.nn.functional.silu(torch.tensor([[1.044921875]])) * 5.0
    assert act_quant_fp8(h32.to(BF16)).item() == 3.75  # what the fp32 gate would give
    # fp32 activations: the GEMM outputs are not rounded (plain and official agree on them)
    y32 = swiglu(x.float(), w1, w2, w3, limit=10.0, act_quant=True)
    assert y32[0, 0].item() == act_quant_fp8(h32).item()


def test_indexer_keys_hadamard_is_bf16_before_fp4():
    """A new indexer key [-0.248046875, 3.5625, 3.375, 3.3125] (bf16): its Hadamard is
    [5.0009766, -1.875, -1.6875, -1.9375], written in bf16 as [5.0, ...]; FP4 (scale 1) then
    gives [4 (5 is a tie, to even), -2, -1.5, -2]. Rotated in fp32, 5.0009766 rounds to 6."""
    key = [-0.248046875, 3.5625, 3.375, 3.3125]
    entries = round_entries(torch.tensor([key], dtype=BF16), "fp4", rope_dim=2)
    assert entries.tolist() == [[4.0, -2.0, -1.5, -2.0]]
    entries32 = round_entries(torch.tensor([key]), "fp4", rope_dim=2)  # fp32: no bf16 point
    assert entries32.tolist() == [[6.0, -2.0, -1.5, -2.0]]
