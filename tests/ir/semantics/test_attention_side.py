"""Attention-side semantics (norm, RoPE, compressor, indexer, sparse attention, grouped output
projection) against independent oracles: the HF transformers port's modules (built from the
tiny spec's HF config, fp32, random weights copied in, run with and without HF's own cache) and
numbers worked out by hand on small inputs.

Everything runs in fp32 with no FP8/FP4/Hadamard simulation, so the HF differences of
V4_REFERENCE §16 (items 1-2: rounding simulation, bf16 compressor projections) vanish and HF
agrees with the official semantics up to fp32 rounding (tolerance FP32).
"""

from __future__ import annotations

import math
import types

import pytest
import torch
import transformers
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_sliding_window_causal_mask
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as hf

from v4c.ir.semantics.attention import grouped_linear, sparse_attention
from v4c.ir.semantics.compressor import compress
from v4c.ir.semantics.indexer import indexer_score, indexer_topk
from v4c.ir.semantics.norm import rms_norm
from v4c.ir.semantics.rope import apply_rope, rope_freqs
from v4c.spec import load_spec
from v4c.spec.config_io import spec_to_config
from v4c.spec.schema import coff

FP32 = {"rtol": 1e-5, "atol": 1e-5}  # fp32 rounding of reordered sums
EXACT = {"rtol": 0.0, "atol": 1e-6}  # hand-computed values
BF16 = {"rtol": 4e-3, "atol": 1e-5}  # one bf16 rounding of the output (2^-8 relative)
LAYER = {"sliding": 0, "csa": 1, "hca": 2}  # the tiny spec's layers: sliding, csa, hca, csa

SPEC = load_spec("tiny")
EPS = SPEC.norm_eps
ROPE_DIM = SPEC.attention.rope_head_dim
MAIN_FREQS = rope_freqs(ROPE_DIM, SPEC.rope.theta, None)
COMPRESS_FREQS = rope_freqs(ROPE_DIM, SPEC.rope.compress_theta, SPEC.rope.yarn.model_dump())


def rows(n: int) -> torch.Tensor:
    """`slots` of a step over cache rows 0..n-1, in order (step row b is cache row b)."""
    return torch.arange(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tensors are tiny: intra-op threads only add overhead, and noise on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def config():
    cfg = transformers.DeepseekV4Config(**spec_to_config(SPEC, "hf"))
    cfg._attn_implementation = "eager"
    return cfg


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights with O(1) activations: linears ~ 1/sqrt(fan_in), norms ~ 1, biases/sinks ~ N(0,1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("proj.weight"):
                p.copy_(noise / math.sqrt(p.shape[1]))
            else:  # position_bias, sinks
                p.copy_(noise)
    return module.eval()


# ---------------------------------------------------------------------------------- norm, rope


def test_rms_norm_matches_hf():
    x = torch.randn(2, 3, 128)
    norm = _randomize(hf.DeepseekV4RMSNorm(128, eps=EPS), 1)
    torch.testing.assert_close(rms_norm(x, norm.weight, EPS), norm(x), **FP32)
    q = torch.randn(2, 3, 4, 128)
    torch.testing.assert_close(
        rms_norm(q, None, EPS), hf.DeepseekV4UnweightedRMSNorm(EPS)(q), **FP32
    )


def test_rms_norm_by_hand_and_dtype():
    x = torch.tensor([[3.0, 4.0]])  # mean square 12.5
    expected = torch.tensor([[3.0, 4.0]]) / math.sqrt(12.5 + 1e-6) * torch.tensor([2.0, -1.0])
    torch.testing.assert_close(rms_norm(x, torch.tensor([2.0, -1.0]), 1e-6), expected, **EXACT)
    assert rms_norm(x.bfloat16(), None, 1e-6).dtype == torch.bfloat16


def test_yarn_frequencies_by_hand():
    """§4.3: theta 160000 gives lo = 15, hi = 25: pairs 0..15 keep f_i, 25..31 get f_i/16."""
    corr = [64 * math.log(65536 / (2 * math.pi * n)) / (2 * math.log(160000)) for n in (32, 1)]
    assert [round(v, 2) for v in corr] == [15.45, 24.71]
    base = 160000.0 ** (-torch.arange(32, dtype=torch.float64) * 2 / 64)
    ramp = ((torch.arange(32, dtype=torch.float64) - 15) / (25 - 15)).clamp(0, 1)
    expected = base * (1 - ramp) + base / 16 * ramp
    got = COMPRESS_FREQS
    assert got.dtype == torch.float32 and got.shape == (32,)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(got[:16].double(), base[:16], rtol=1e-6, atol=0.0)
    torch.testing.assert_close(got[25:].double(), base[25:] / 16, rtol=1e-6, atol=0.0)
    plain = 10000.0 ** (-torch.arange(32, dtype=torch.float64) * 2 / 64)
    torch.testing.assert_close(MAIN_FREQS.double(), plain, rtol=1e-6, atol=0.0)


def test_rope_freqs_match_hf(config):
    rotary = hf.DeepseekV4RotaryEmbedding(config)
    torch.testing.assert_close(MAIN_FREQS, rotary.main_inv_freq, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(COMPRESS_FREQS, rotary.compress_inv_freq, rtol=1e-6, atol=0.0)
    assert rotary.compress_attention_scaling == 1.0  # no mscale, as in §4.3


def test_apply_rope_by_hand():
    """Pair (2i, 2i+1) is the complex number x_2i + j x_2i+1, multiplied by e^(j pos f_i)."""
    x = torch.tensor([[[[7.0, 1.0, 0.0, 0.0, 2.0]]]])  # [B=1, T=1, H=1, d=5]: 1 pass-through
    freqs = torch.tensor([math.pi / 2, math.pi / 4])
    got = apply_rope(x, torch.tensor([[1]]), freqs)
    s = math.sqrt(0.5)  # (1 + 0j) * e^(j pi/2) = j;  (0 + 2j) * e^(j pi/4) = 2j (s + s j)
    torch.testing.assert_close(got, torch.tensor([[[[7.0, 0.0, 1.0, -2 * s, 2 * s]]]]), **EXACT)
    torch.testing.assert_close(
        apply_rope(got, torch.tensor([[1]]), freqs, inverse=True), x, **EXACT
    )


@pytest.mark.parametrize("kind", ["main", "compress"])
def test_apply_rope_matches_hf(config, kind):
    """Rows at different positions; q-like [B, T, H, d] and kv-like [B, T, d] inputs."""
    rotary = hf.DeepseekV4RotaryEmbedding(config)
    freqs = MAIN_FREQS if kind == "main" else COMPRESS_FREQS
    positions = torch.stack([torch.arange(5), torch.arange(300, 305)])
    cos, sin = rotary(torch.zeros(1), position_ids=positions, layer_type=kind)
    q = torch.randn(2, 5, 4, 128)
    expected = hf.apply_rotary_pos_emb(q.transpose(1, 2), cos, sin).transpose(1, 2)
    torch.testing.assert_close(apply_rope(q, positions, freqs), expected, **FP32)
    inverse = hf.apply_rotary_pos_emb(q.transpose(1, 2), cos, -sin).transpose(1, 2)
    torch.testing.assert_close(apply_rope(q, positions, freqs, inverse=True), inverse, **FP32)
    kv = torch.randn(2, 5, 128)
    expected = hf.apply_rotary_pos_emb(kv[:, None], cos, sin)[:, 0]
    torch.testing.assert_close(apply_rope(kv, positions, freqs), expected, **FP32)


# ---------------------------------------------------------------------------------- compressor


def _state(batch: int, ratio: int, c: int, entries: int) -> dict:
    f = coff(ratio)
    return {
        "state_kv": torch.zeros(batch, f * ratio, f * c),
        "state_score": torch.full((batch, f * ratio, f * c), float("-inf")),
        "cache": torch.zeros(batch, entries, c),
    }


def _compress(module, x, positions, ratio: int, state: dict, slots=None) -> None:
    """Our compressor with the weights of an HF compressor (or indexer) module; step row b
    goes to cache row slots[b] (default: row b)."""
    compress(
        x,
        positions,
        module.kv_proj.weight,
        module.gate_proj.weight,
        module.position_bias,
        module.kv_norm.weight,
        ratio=ratio,
        rope_freqs=COMPRESS_FREQS,
        rope_dim=ROPE_DIM,
        eps=EPS,
        slots=rows(x.shape[0]) if slots is None else slots,
        **state,
    )


def _chunks(x: torch.Tensor, sizes: list[int]):
    """(x chunk, positions) per chunk, every row starting at position 0."""
    start = 0
    for size in sizes:
        positions = torch.arange(start, start + size).expand(x.shape[0], -1)
        yield x[:, start : start + size], positions
        start += size


def _hf_compressor(config, kind: str, seed: int):
    cls = hf.DeepseekV4CSACompressor if kind == "csa" else hf.DeepseekV4HCACompressor
    return _randomize(cls(config), seed)


def _hf_compress_chunks(module, config, kind, x, sizes) -> dict[str, torch.Tensor]:
    """HF's compressor run chunk by chunk on its own cache layer; its compressed entries."""
    layer = (hf.DeepseekV4CSACache if kind == "csa" else hf.DeepseekV4HCACache)(config)
    cache = types.SimpleNamespace(layers=[layer])
    for chunk, positions in _chunks(x, sizes):
        qr = torch.randn(*chunk.shape[:2], config.q_lora_rank)  # only feeds HF's top-k
        module(chunk, qr, positions, cache, 0)
    return {name: kv for name, kv in layer.compressed_kv.items()}


@pytest.mark.parametrize(
    "kind, ratio, sizes",
    [
        ("hca", 128, [300]),  # prefill crossing two window boundaries, 44 tokens left over
        ("hca", 128, [127, 2, 1, 130, 40]),  # chunks ending on both sides of a boundary
        ("csa", 4, [23]),
        ("csa", 4, [6, 1, 1, 9, 3, 1, 2]),  # chunks split mid-window, decode steps
    ],
)
def test_compressor_matches_hf(config, kind, ratio, sizes):
    """Main compressor (c = head_dim) and, for CSA, the indexer's (c = index_head_dim), against
    HF's compressor run chunk by chunk with its cache (HF keeps the overlap state separately)."""
    module = _hf_compressor(config, kind, seed=2)
    x = torch.randn(2, sum(sizes), config.hidden_size)
    expected = _hf_compress_chunks(module, config, kind, x, sizes)
    parts = {"compressor": (module, config.head_dim)}
    if kind == "csa":
        parts["indexer"] = (module.indexer, config.index_head_dim)
    for name, (part, c) in parts.items():
        state = _state(2, ratio, c, entries=sum(sizes) // ratio + 1)
        for chunk, positions in _chunks(x, sizes):
            _compress(part, chunk, positions, ratio, state)
        n = expected[name].shape[1]
        assert n == sum(sizes) // ratio
        torch.testing.assert_close(state["cache"][:, :n], expected[name], **FP32)
        assert not state["cache"][:, n:].any()  # no entry for the incomplete window


def test_compressor_prefill_matches_hf_without_cache(config):
    module = _hf_compressor(config, "hca", seed=3)
    x = torch.randn(1, 300, config.hidden_size)
    expected, _ = module(x, None, torch.arange(300)[None], None, 0)  # [B, 1, n, c]
    state = _state(1, 128, config.head_dim, entries=3)
    _compress(module, x, torch.arange(300)[None], 128, state)
    torch.testing.assert_close(state["cache"][:, :2], expected[:, 0], **FP32)


@pytest.mark.parametrize(
    "ratio, sizes",
    [
        (4, [1] * 19),  # decode token by token from position 0
        (4, [3, 5, 2, 9]),  # splits off window boundaries
        (4, [7, 12]),
        (128, [100, 1, 1, 1, 25, 1, 130, 41]),  # decode steps, a step closing window 0
        (128, [129, 128, 43]),
    ],
)
def test_compressor_chunked_equals_one_shot(ratio, sizes):
    """Same cache and same state whatever the chunking."""
    d, c, total, f = 32, 16, sum(sizes), coff(ratio)
    weights = [torch.randn(f * c, d), torch.randn(f * c, d), torch.randn(ratio, f * c)]
    kw = {"ratio": ratio, "rope_freqs": COMPRESS_FREQS[:4], "rope_dim": 8, "eps": EPS}
    x = torch.randn(2, total, d)
    norm_weight = torch.rand(c) + 0.5
    runs = []
    for split in (sizes, [total]):
        state = _state(2, ratio, c, entries=total // ratio + 1)
        for chunk, positions in _chunks(x, split):
            compress(chunk, positions, *weights, norm_weight, **kw, slots=rows(2), **state)
        runs.append(state)
    for key in runs[0]:  # bitwise: the projections are batch-invariant (semantics/invariant.py)
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_compressor_state_layout():
    """The ring after a prefill of 10 tokens with m = 4 (overlap, 8 slots): token p's raw
    (K, Z + ape) in slot p % 8, so slots 0, 1 hold tokens 8, 9 and slots 2..7 tokens 2..7
    (what §6.5's shifting state holds, windows 1 and 2, plus the stale tokens 2, 3)."""
    d, c = 8, 4
    wkv, wgate, ape = torch.randn(2 * c, d), torch.randn(2 * c, d), torch.randn(4, 2 * c)
    x = torch.randn(1, 10, d)
    state = _state(1, 4, c, entries=3)
    compress(
        x,
        torch.arange(10)[None],
        wkv,
        wgate,
        ape,
        torch.ones(c),
        ratio=4,
        rope_freqs=COMPRESS_FREQS[:1],
        rope_dim=2,
        eps=EPS,
        slots=rows(1),
        **state,
    )
    k, z = x[0] @ wkv.T, x[0] @ wgate.T + ape[torch.arange(10) % 4]
    ring = torch.arange(2, 10) % 8
    torch.testing.assert_close(state["state_kv"][0, ring], k[2:10], **EXACT)
    torch.testing.assert_close(state["state_score"][0, ring], z[2:10], **EXACT)
    assert state["cache"][0, :2].abs().sum(-1).gt(0).all() and not state["cache"][0, 2].any()


def test_compressor_entry_by_hand():
    """m = 4 overlap, entry 1 pools the 'a' half of tokens 0..3 and the 'b' half of 4..7:
    per channel softmax over 8 slots, RMSNorm, RoPE at position 4 (one pair, f = pi/8)."""
    d, c = 6, 2
    wkv, wgate, ape = torch.randn(2 * c, d), torch.randn(2 * c, d), torch.randn(4, 2 * c)
    x = torch.randn(1, 8, d)
    state = _state(1, 4, c, entries=2)
    freqs = torch.tensor([math.pi / 8])
    compress(
        x,
        torch.arange(8)[None],
        wkv,
        wgate,
        ape,
        torch.ones(c),
        ratio=4,
        rope_freqs=freqs,
        rope_dim=2,
        eps=EPS,
        slots=rows(1),
        **state,
    )
    k, z = x[0] @ wkv.T, x[0] @ wgate.T + ape[torch.arange(8) % 4]
    slot_k = torch.cat([k[0:4, :c], k[4:8, c:]])  # [8, c]
    slot_z = torch.cat([z[0:4, :c], z[4:8, c:]])
    pooled = (slot_k * torch.exp(slot_z) / torch.exp(slot_z).sum(0)).sum(0)
    normed = pooled / torch.sqrt(pooled.square().mean() + EPS)
    re, im = normed[0], normed[1]  # rotated by 4 * pi/8 = pi/2: (re, im) -> (-im, re)
    torch.testing.assert_close(state["cache"][0, 1], torch.stack([-im, re]), **FP32)


@pytest.mark.parametrize("ratio, starts, step", [(4, (3, 10), 7), (128, (100, 250), 40)])
def test_compressor_rows_at_different_positions(ratio, starts, step):
    """One call with rows at different start positions equals each row run alone."""
    d, c, f = 16, 8, coff(ratio)
    weights = [torch.randn(f * c, d), torch.randn(f * c, d), torch.randn(ratio, f * c)]
    weights.append(torch.rand(c) + 0.5)
    total = max(starts) + step
    x = torch.randn(2, total, d)
    kw = {"ratio": ratio, "rope_freqs": COMPRESS_FREQS[:2], "rope_dim": 4, "eps": EPS}
    joint = _state(2, ratio, c, entries=total // ratio + 1)
    for b, start in enumerate(starts):  # each row's own history, in its own cache row
        history = x[b : b + 1, :start], torch.arange(start)[None]
        compress(*history, *weights, **kw, slots=torch.tensor([b]), **joint)
    positions = torch.stack([torch.arange(s, s + step) for s in starts])
    chunk = torch.stack([x[b, s : s + step] for b, s in enumerate(starts)])
    compress(chunk, positions, *weights, **kw, slots=rows(2), **joint)
    for b, start in enumerate(starts):
        alone = _state(1, ratio, c, entries=total // ratio + 1)
        whole = x[b : b + 1, : start + step], torch.arange(start + step)[None]
        compress(*whole, *weights, **kw, slots=rows(1), **alone)
        for key, value in alone.items():  # bitwise: batch-invariant projections
            assert torch.equal(joint[key][b : b + 1], value), key


@pytest.mark.parametrize("ratio", [4, 128])
def test_compressor_writes_only_the_slots_rows(ratio):
    """A step over cache rows [2, 0] of 3 (step row 0 is cache row 2) advances exactly those
    rows, as a step of the same tokens on caches of their own does; row 1 is untouched."""
    d, c, coff, step = 16, 8, 2 if ratio == 4 else 1, ratio + 3
    weights = [torch.randn(coff * c, d), torch.randn(coff * c, d), torch.randn(ratio, coff * c)]
    weights.append(torch.rand(c) + 0.5)
    kw = {"ratio": ratio, "rope_freqs": COMPRESS_FREQS[:2], "rope_dim": 4, "eps": EPS}
    shared = _state(3, ratio, c, entries=4)
    for value in shared.values():  # what earlier steps left, distinct per row
        value.copy_(torch.randn(value.shape))
    own = {key: value[[2, 0]].clone() for key, value in shared.items()}  # the rows, alone
    untouched = {key: value[1].clone() for key, value in shared.items()}
    x, positions = torch.randn(2, step, d), torch.arange(step).expand(2, -1) + ratio
    compress(x, positions, *weights, **kw, slots=torch.tensor([2, 0]), **shared)
    compress(x, positions, *weights, **kw, slots=rows(2), **own)
    for key, value in shared.items():
        assert torch.equal(value[[2, 0]], own[key]), key
        assert torch.equal(value[1], untouched[key]), key


# ---------------------------------------------------------------------------------- indexer


def _indexer_keys(indexer, x, entries: int) -> torch.Tensor:
    state = _state(x.shape[0], 4, indexer.head_dim, entries)
    _compress(indexer, x, torch.arange(x.shape[1]).expand(x.shape[0], -1), 4, state)
    return state["cache"]


def test_indexer_matches_hf(config):
    """40 tokens: up to 10 visible entries, top-k 4; HF's indexer without cache."""
    indexer = _randomize(hf.DeepseekV4Indexer(config), 4)
    x, qr = torch.randn(2, 40, config.hidden_size), torch.randn(2, 40, config.q_lora_rank)
    positions = torch.arange(40).expand(2, -1)
    expected = indexer(x, qr, positions, None, 0)  # [B, T, min(topk, 10)]
    keys = _indexer_keys(indexer, x, entries=12)
    got = indexer_topk(
        qr @ indexer.q_b_proj.weight.T,
        x @ indexer.scorer.weights_proj.weight.T,
        positions,
        keys,
        slots=rows(2),
        topk=config.index_topk,
        ratio=4,
        rope_freqs=COMPRESS_FREQS,
        rope_dim=ROPE_DIM,
    )
    assert got.shape == (2, 40, config.index_topk)
    # the selected set matters, not its order; HF's topk order among equals is unspecified
    torch.testing.assert_close(got.sort(-1).values, expected.sort(-1).values, rtol=0, atol=0)
    assert (got[:, :3] == -1).all() and (got[:, 3, 1:] == -1).all() and (got[:, 3, 0] == 0).all()


def test_indexer_scores_formula():
    """Direct transcription of §7 steps 1-4 on a small case, head by head."""
    hi, di, q_lora, d = 2, 4, 3, 5
    qr, x = torch.randn(1, 2, q_lora), torch.randn(1, 2, d)
    wq_b, wproj, keys = torch.randn(hi * di, q_lora), torch.randn(hi, d), torch.randn(1, 3, di)
    freqs, positions = torch.tensor([0.3]), torch.tensor([[5, 6]])
    got = indexer_score(qr @ wq_b.T, x @ wproj.T, positions, keys, rope_freqs=freqs)
    for t in range(2):
        q = (wq_b @ qr[0, t]).view(hi, di)
        angle = positions[0, t] * 0.3
        re, im = q[:, 2].clone(), q[:, 3].clone()
        q[:, 2], q[:, 3] = (
            re * math.cos(angle) - im * math.sin(angle),
            re * math.sin(angle) + im * math.cos(angle),
        )
        w = (wproj @ x[0, t]) / math.sqrt(di) / math.sqrt(hi)
        for s in range(3):
            expected = sum(w[h] * torch.relu(q[h] @ keys[0, s]) for h in range(hi))
            torch.testing.assert_close(got[0, t, s], expected, **FP32)


def test_indexer_ties_and_padding():
    """Equal scores: the lower entry index wins (chunking cannot change the choice); -1 past
    the visible entries and past C."""
    keys = torch.ones(1, 6, 4).expand(1, 6, 4).clone()  # every entry scores the same
    q, w = torch.full((1, 4, 8), 2.0), torch.full((1, 4, 2), 3.0)  # qr·wq_bᵀ, x·weights_projᵀ
    positions = torch.tensor([[2, 5, 23, 30]])  # visible: 0, 1, 6, 6 (C = 6 caps the last)
    kw = {"ratio": 4, "rope_freqs": torch.zeros(1), "rope_dim": 2, "slots": rows(1)}
    got = indexer_topk(q, w, positions, keys, topk=2, **kw)
    assert got.tolist() == [[[-1, -1], [0, -1], [0, 1], [0, 1]]]
    got = indexer_topk(q, w, positions, keys, topk=8, **kw)
    assert got[0, 3].tolist() == [0, 1, 2, 3, 4, 5, -1, -1]


# ---------------------------------------------------------------------------------- attention


def test_sparse_attention_two_tokens_by_hand():
    """One head, d = 2, scale 1: kv0 = (1, 0), kv1 = (0, 1), q = (ln 2, ln 3), sink ln 5:
    query 0: 2 / (2 + 5) kv0; query 1: (2 kv0 + 3 kv1) / (2 + 3 + 5); window 1: 3/(3+5) kv1."""
    q = torch.tensor([math.log(2), math.log(3)]).expand(1, 2, 1, 2)
    kv = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    sink, positions = torch.tensor([math.log(5)]), torch.tensor([[0, 1]])
    kw = {"compressed": None, "ratio": 0, "topk_idx": None, "softmax_scale": 1.0}
    kw["slots"] = rows(1)
    out = sparse_attention(q, kv, positions, sink, window_cache=torch.zeros(1, 4, 2), **kw)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([[2 / 7, 0.0], [0.2, 0.3]]), **EXACT)
    out = sparse_attention(q, kv, positions, sink, window_cache=torch.zeros(1, 1, 2), **kw)
    torch.testing.assert_close(out[0, 1, 0], torch.tensor([0.0, 3 / 8]), **EXACT)


def test_sparse_attention_compressed_by_hand():
    """HCA visibility w < (i+1)//m and CSA top-k with -1 skipped, one compressed entry each."""
    q = torch.tensor([math.log(2), math.log(3)]).view(1, 1, 1, 2)
    kv, comp = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0], [5.0, 5.0]]])
    sink = torch.tensor([math.log(5)])
    kw = {"window_cache": torch.zeros(1, 1, 2), "compressed": comp, "softmax_scale": 1.0}
    kw["slots"] = rows(1)
    out = sparse_attention(
        q, kv, torch.tensor([[3]]), sink, ratio=4, topk_idx=torch.tensor([[[0, -1]]]), **kw
    )
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.2, 0.3]), **EXACT)
    out = sparse_attention(q, kv, torch.tensor([[2]]), sink, ratio=3, topk_idx=None, **kw)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.2, 0.3]), **EXACT)


def test_window_ring_buffer():
    """After a step, slot p % W holds the kv of position p for the last W positions, in the
    step row's cache row (step rows 0, 1 are cache rows 2, 0 of 3; row 1 keeps its -1s)."""
    cache = torch.full((3, 4, 1), -1.0)
    kv = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1)
    positions = torch.stack([torch.arange(0, 6), torch.arange(7, 13)])
    sparse_attention(
        torch.zeros(2, 6, 1, 1),
        kv,
        positions,
        torch.zeros(1),
        slots=torch.tensor([2, 0]),
        window_cache=cache,
        compressed=None,
        ratio=0,
        topk_idx=None,
        softmax_scale=1.0,
    )
    # positions 9..12 of step row 1 in cache row 0, 2..5 of step row 0 in cache row 2
    assert cache[..., 0].tolist() == [[11, 8, 9, 10], [-1, -1, -1, -1], [4, 5, 2, 3]]


def test_sparse_attention_reads_the_slots_rows():
    """Step row b attends to cache row slots[b] (ring and compressed entries): by hand, one
    head, d = 2, scale 1, sink -inf. Query q = (ln 2, ln 3) at position 1 of step row 0 sees
    its own kv (1, 0) and ring slot 0 of cache row 1, (0, 1), + entry 0 of its compressed row
    (5, 5) at ratio 2: weights 2, 3, 2^5 * 3^5 on (1, 0), (0, 1), (5, 5)."""
    q = torch.tensor([math.log(2), math.log(3)]).view(1, 1, 1, 2)
    kv = torch.tensor([[[1.0, 0.0]]])
    ring = torch.tensor([[[9.0, 9.0], [9.0, 9.0]], [[0.0, 1.0], [7.0, 7.0]]])  # [N=2, W=2, d]
    comp = torch.tensor([[[-3.0, -3.0]], [[5.0, 5.0]]])  # [N=2, C=1, d]
    out = sparse_attention(
        q, kv, torch.tensor([[1]]), torch.tensor([float("-inf")]), slots=torch.tensor([1]),
        window_cache=ring, compressed=comp, ratio=2, topk_idx=None, softmax_scale=1.0,
    )  # fmt: skip
    w = torch.tensor([2.0, 3.0, 6.0**5])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    torch.testing.assert_close(out[0, 0, 0], (w / w.sum()) @ keys, **FP32)
    assert ring[1].tolist() == [[0.0, 1.0], [1.0, 0.0]] and (ring[0] == 9).all()


def test_grouped_out_proj_matches_hf(config):
    groups, rank = config.o_groups, config.o_lora_rank
    width = config.num_attention_heads * config.head_dim // groups
    linear = _randomize(hf.DeepseekV4GroupedLinear(width, groups * rank, groups), 5)
    o = torch.randn(2, 3, config.num_attention_heads, config.head_dim)
    expected = linear(o.reshape(2, 3, groups, width)).flatten(2)
    torch.testing.assert_close(grouped_linear(o, linear.weight, groups), expected, **FP32)


class OurAttention:
    """A whole attention layer (§4, §6-§8) composed from our semantics, with HF's weights."""

    def __init__(self, attn, config, kind: str, batch: int, max_tokens: int):
        self.a, self.config, self.kind = attn, config, kind
        self.ratio = {"sliding": 0, "csa": 4, "hca": SPEC.attention.hca_ratio}[kind]
        self.freqs = MAIN_FREQS if kind == "sliding" else COMPRESS_FREQS
        self.window = torch.zeros(batch, config.sliding_window, config.head_dim)
        entries = max_tokens // max(self.ratio, 1) + 1
        self.main = _state(batch, self.ratio, config.head_dim, entries) if self.ratio else None
        self.index = _state(batch, 4, config.index_head_dim, entries) if kind == "csa" else None

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, slots=None) -> torch.Tensor:
        """One step; step row b uses cache row slots[b] (default: row b)."""
        a, cfg = self.a, self.config
        slots = rows(x.shape[0]) if slots is None else slots
        qr = rms_norm(x @ a.q_a_proj.weight.T, a.q_a_norm.weight, EPS)
        q = (qr @ a.q_b_proj.weight.T).unflatten(-1, (cfg.num_attention_heads, cfg.head_dim))
        q = apply_rope(rms_norm(q, None, EPS), positions, self.freqs)
        kv = apply_rope(
            rms_norm(x @ a.kv_proj.weight.T, a.kv_norm.weight, EPS), positions, self.freqs
        )
        topk = None
        if self.ratio:
            _compress(a.compressor, x, positions, self.ratio, self.main, slots)
        if self.kind == "csa":
            ix = a.compressor.indexer
            _compress(ix, x, positions, 4, self.index, slots)
            topk = indexer_topk(
                qr @ ix.q_b_proj.weight.T,
                x @ ix.scorer.weights_proj.weight.T,
                positions,
                self.index["cache"],
                slots=slots,
                topk=cfg.index_topk,
                ratio=4,
                rope_freqs=self.freqs,
                rope_dim=ROPE_DIM,
            )
        o = sparse_attention(
            q,
            kv,
            positions,
            a.sinks,
            slots=slots,
            window_cache=self.window,
            compressed=self.main["cache"] if self.ratio else None,
            ratio=self.ratio,
            topk_idx=topk,
            softmax_scale=cfg.head_dim**-0.5,
        )
        o = apply_rope(o, positions, self.freqs, inverse=True)
        return grouped_linear(o, a.o_a_proj.weight, cfg.o_groups) @ a.o_b_proj.weight.T


def _hf_attention(attn, config, x, positions, cache):
    rotary = hf.DeepseekV4RotaryEmbedding(config)
    embeddings = {
        kind: rotary(x, position_ids=positions, layer_type=kind) for kind in ("main", "compress")
    }
    # the cache by position: transformers renamed its keyword past_key_values to cache (5.2x,
    # the old name deprecated), and the versions this project supports differ
    mask = create_sliding_window_causal_mask(config, x, None, cache, positions)
    with torch.no_grad():
        return attn(x, embeddings, positions, mask, cache)[0]


@pytest.mark.parametrize(
    "kind, sizes",
    [
        ("sliding", [40]),  # prefill longer than the window (16)
        ("sliding", [13, 1, 1, 9]),
        ("csa", [40]),  # up to 10 visible entries, top-k 4
        ("csa", [18, 1, 1, 3, 1, 6]),  # chunked prefill split mid-window, then decode
        ("hca", [300]),  # crosses two ratio-128 boundaries
        ("hca", [126, 1, 1, 1, 131]),  # decode steps across a boundary, then a chunk across one
    ],
)
def test_attention_layer_matches_hf(config, kind, sizes):
    """The composed layer against HF's DeepseekV4Attention, one-shot without cache or chunk by
    chunk with HF's DynamicCache (sliding-window and compressor state carried across calls)."""
    attn = _randomize(hf.DeepseekV4Attention(config, LAYER[kind]), 6)
    x = torch.randn(2, sum(sizes), config.hidden_size)
    ours = OurAttention(attn, config, kind, batch=2, max_tokens=sum(sizes))
    cache = None
    if len(sizes) > 1:  # HF's mask builder reads the window length from layer 0's cache
        cache = DynamicCache(config=config)
        cache.layers[0] = cache.layers[LAYER[kind]]
    for chunk, positions in _chunks(x, sizes):
        expected = _hf_attention(attn, config, chunk, positions, cache)
        with torch.no_grad():
            torch.testing.assert_close(ours(chunk, positions), expected, **FP32)


@pytest.mark.parametrize(
    "kind, starts, step",
    [("sliding", (9, 3, 30), 5), ("csa", (5, 13, 22), 6), ("hca", (120, 60, 250), 10)],
)
def test_attention_rows_at_different_positions(config, kind, starts, step):
    """A step over cache rows [2, 0] of 3 (permuted, not contiguous), at different positions,
    equals each row's own one-shot run, and leaves row 1's caches exactly as they were."""
    attn = _randomize(hf.DeepseekV4Attention(config, LAYER[kind]), 7)
    total = max(starts) + step
    x = torch.randn(3, total, config.hidden_size)
    joint = OurAttention(attn, config, kind, batch=3, max_tokens=total)

    def caches():
        return [joint.window, *(joint.main or {}).values(), *(joint.index or {}).values()]

    with torch.no_grad():
        for b, start in enumerate(starts):  # each row's history, in its own cache row
            joint(x[b : b + 1, :start], torch.arange(start)[None], slots=torch.tensor([b]))
        before = [c[1].clone() for c in caches()]
        step_rows = [2, 0]
        positions = torch.stack([torch.arange(starts[b], starts[b] + step) for b in step_rows])
        chunk = torch.stack([x[b, starts[b] : starts[b] + step] for b in step_rows])
        got = joint(chunk, positions, slots=torch.tensor(step_rows))
        for i, b in enumerate(step_rows):
            alone = OurAttention(attn, config, kind, batch=1, max_tokens=total)
            whole = x[b : b + 1, : starts[b] + step], torch.arange(starts[b] + step)[None]
            torch.testing.assert_close(got[i], alone(*whole)[0, starts[b] :], **FP32)
        assert all(torch.equal(c[1], old) for c, old in zip(caches(), before, strict=True))


def test_outputs_keep_the_input_dtype():
    """bf16 in, bf16 out: fp32 arithmetic rounded once at the end (one bf16 rounding)."""
    x, positions = torch.randn(2, 5, 4, 16).bfloat16(), torch.arange(5).expand(2, -1)
    got = apply_rope(x, positions, MAIN_FREQS[:4])
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(
        got.float(), apply_rope(x.float(), positions, MAIN_FREQS[:4]), **BF16
    )
    kv, sink = torch.randn(2, 5, 16).bfloat16(), torch.randn(4)
    kw = {"compressed": None, "ratio": 0, "topk_idx": None, "softmax_scale": 0.25}
    kw["slots"] = rows(2)
    got = sparse_attention(
        x, kv, positions, sink, window_cache=torch.zeros(2, 4, 16).bfloat16(), **kw
    )
    expected = sparse_attention(
        x.float(), kv.float(), positions, sink, window_cache=torch.zeros(2, 4, 16), **kw
    )
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, **BF16)
    got = grouped_linear(x, torch.randn(6, 32), 2)
    assert got.dtype == torch.bfloat16 and got.shape == (2, 5, 6)
