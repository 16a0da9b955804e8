"""The MTP block's logits (`mtp_logits`) against V4_REFERENCE §11, with transformers as the
oracle of the block itself.

transformers has no MTP (§16.6), but the MTP block is an ordinary V4 block (sliding
attention, score-gated MoE) between a hand-written input and the usual hc_head / norm /
shared head. So the oracle is: the main model in transformers, its last block's 4-stream
output H captured by a hook; the MTP input written here from §11,
    X = e_proj(enorm(Embed(ids'))) broadcast over the streams + h_proj(hnorm(H)),
ids' = ids shifted left by one; then a one-block transformers model that holds the
`mtp.0.*` weights as its layer 0 and its own hc_head and norm (with the shared embedding
and head), its layer 0 fed X in place of the embedding streams. HF keeps that block's
sliding-window cache across calls, as the MTP block keeps its own.

Compared: v4c's built graph through the reference executor, and the compiled plan
(torch backend), fp32, numerics plain, on a prefill of 30 tokens (the window is 16) and
5 decode steps after it; max |v4c - HF| <= 1e-4 over the logits, as in test_hf_parity.
A smaller vocabulary (1024) than tiny's keeps the two HF checkpoints small.
"""

from __future__ import annotations

import pytest
import torch

from tests.plan_runner import PlanRunner
from v4c.compile import compile_spec
from v4c.ir.build import build
from v4c.passes.base import CompileOptions
from v4c.runtime.checkpoint.write import write_hf
from v4c.runtime.engine import Engine
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.runtime.reference import ReferenceExecutor
from v4c.spec import load_spec
from v4c.spec.tensors import checkpoint_tensors

ATOL = 1e-4  # max |v4c - HF| over the logits, fp32
pytestmark = pytest.mark.slow  # two HF models and 6 reference steps: ~15 s on 2 idle cores
EPS = 1e-6  # V4_REFERENCE §1: RMSNorm eps
PREFILL, DECODES = 30, 5
MAIN = "extends: tiny.yaml\nname: tiny-mtp\nvocab_size: 1024\n"
# the MTP block as a one-block model: sliding attention, a score gate (layer 4 >= hash_layers)
ONE_BLOCK = "extends: main.yaml\nname: tiny-mtp-block\nlayers: [sliding]\nnum_layers: 1\n"
ONE_BLOCK += "moe: {hash_layers: 0}\nmtp: {num_layers: 0}\n"


def _rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """§2: w * x / sqrt(mean(x^2) + eps) over the last dim."""
    return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)


def _block_weights(weights: dict[str, torch.Tensor], spec) -> dict[str, torch.Tensor]:
    """The one-block model's weights: `mtp.0.X` as `layers.0.X`, the MTP's own hc_head and
    norm as the model's, embedding and head shared with the main model (§11)."""
    out = {}
    for t in checkpoint_tensors(spec):
        source = t.name.replace("layers.0.", "mtp.0.", 1)
        if t.name == "norm.weight" or t.name.startswith("hc_head_"):
            source = f"mtp.0.{t.name}"
        out[t.name] = weights[source]
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import DeepseekV4ForCausalLM

    folder = tmp_path_factory.mktemp("mtp")
    (folder / "main.yaml").write_text(MAIN)
    (folder / "block.yaml").write_text(ONE_BLOCK)
    spec, block_spec = load_spec(folder / "main.yaml"), load_spec(folder / "block.yaml")
    weights = random_weights(spec, seed=5)
    models = []
    for name, s, w in (("hf_main", spec, weights), ("hf_block", block_spec, None)):
        w = w if w is not None else _block_weights(weights, s)
        write_hf(folder / name, s, w, dtype=torch.float32)
        model = DeepseekV4ForCausalLM.from_pretrained(
            folder / name, dtype=torch.float32, attn_implementation="eager"
        )
        models.append(model.eval())
    ids = torch.randint(
        0, 1024, (1, PREFILL + DECODES + 1), generator=torch.Generator().manual_seed(2)
    )
    return spec, weights, *models, ids


@pytest.fixture(scope="module")
def hf_steps(setup) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, mtp_logits) [S, V] of each step (the prefill, then the decodes) by the oracle."""
    spec, weights, main, block, ids = setup
    mtp = {k.removeprefix("mtp.0."): v for k, v in weights.items() if k.startswith("mtp.0.")}
    captured = {}
    hook = main.model.layers[-1].register_forward_hook(
        lambda _m, _a, out: captured.__setitem__("H", out)
    )
    feed = block.model.layers[0].register_forward_pre_hook(lambda _m, _a: (captured["X"],))
    steps, main_cache, block_cache = [], None, None
    try:
        with torch.no_grad():
            for lo, hi in _bounds():
                out = main(ids[:, lo:hi], cache=main_cache, use_cache=True)
                main_cache = out.past_key_values
                H = captured["H"]  # [1, S, 4, D]: the last block's streams, before hc_head
                nxt = ids[:, lo + 1 : hi + 1]  # ids': each position paired with the next token
                e = _rms_norm(weights["embed.weight"][nxt], mtp["enorm.weight"])  # [1, S, D]
                h = _rms_norm(H, mtp["hnorm.weight"])  # per stream, over D: [1, S, 4, D]
                x_e, x_h = e @ mtp["e_proj.weight"].T, h @ mtp["h_proj.weight"].T
                captured["X"] = x_e[:, :, None] + x_h  # e_proj(e) broadcast over the streams
                dummy = torch.zeros(1, hi - lo, spec.hidden_size)  # replaced by X at layer 0
                b = block(inputs_embeds=dummy, cache=block_cache, use_cache=True)
                block_cache = b.past_key_values
                steps.append((out.logits[0], b.logits[0]))
    finally:
        hook.remove()
        feed.remove()
    return steps


def _step_inputs(ids, lo, hi):
    return {
        "ids": ids[:, lo:hi],
        "positions": torch.arange(lo, hi)[None],
        "slots": torch.tensor([0]),
        "mtp_ids": ids[:, lo + 1 : hi + 1],
    }


def _bounds():
    return [(0, PREFILL)] + [(t, t + 1) for t in range(PREFILL, PREFILL + DECODES)]


def test_reference_graph_mtp_logits_match_section_11(setup, hf_steps):
    """The main model's component first (its `hidden` streams), then the MTP block's fed them,
    as the verify and draft entry points run."""
    spec, weights, *_, ids = setup
    executor = ReferenceExecutor(build(spec), weights)
    state = executor.new_state(batch=1, max_seq=64)
    for (lo, hi), (logits, mtp_logits) in zip(_bounds(), hf_steps, strict=True):
        step = _step_inputs(ids, lo, hi)
        main = executor.run(step, state, outputs=("logits", "hidden"))
        assert (main["logits"][0] - logits).abs().max().item() <= ATOL
        ours = executor.run({**step, "hidden": main["hidden"]}, state, outputs=("mtp_logits",))
        err = (ours["mtp_logits"][0] - mtp_logits).abs().max().item()
        assert err <= ATOL, f"step at {lo}: mtp_logits differ by {err:.3g}"


def test_compiled_plan_mtp_logits_match_section_11(setup, hf_steps):
    spec, weights, *_, ids = setup
    options = CompileOptions(
        max_tokens=PREFILL, max_seq=64, logits="all", weights="bf16", dtype="fp32"
    )
    plan = compile_spec(spec, options).plan
    engine = Engine(plan, weights, dtype=torch.float32)
    engine.reset(1)
    runner = PlanRunner(plan, engine.params, engine.state)
    for (lo, hi), (_, mtp_logits) in zip(_bounds(), hf_steps, strict=True):
        step = _step_inputs(ids, lo, hi)
        hidden = runner.run(step, "prefill")["hidden"]  # prefill returns the streams, decode not
        ours = runner.run({**step, "hidden": hidden}, "draft")["logits"][0]
        assert (ours - mtp_logits).abs().max().item() <= ATOL, f"step at {lo}"
