"""`v4c bench`'s comparisons on the same weights: greedy generation with and without
speculation (the MTP block, and a perfect drafter), and transformers' eager model.

The perfect drafter takes the plain run's own tokens as drafts, so every draft is accepted:
what verification costs when drafting is free. Random weights accept almost no MTP draft;
the perfect drafter shows the mechanism's speed.
"""

from __future__ import annotations

import torch

from v4c.bench_measure import timed
from v4c.runtime.engine import Engine
from v4c.spec import ModelSpec


def bench_speculation(engine: Engine, prompts: list[list[int]], new: int, k: int) -> dict:
    """Greedy generation of `new` tokens: plain, MTP with `k` drafts, perfect K = 1..3."""
    from v4c.runtime.drafting import MtpDrafter
    from v4c.runtime.generate import generate
    from v4c.runtime.sampler import Sampler

    sampler = Sampler()

    def run(k=0, oracle=None):
        figures = {}
        for _ in range(2):  # the first binds the steps of every length (and captures graphs)
            drafter = MtpDrafter(engine, sampler, k, oracle) if k else None
            out = generate(engine, prompts, sampler, max_new_tokens=new, stop_ids=set(),
                           drafter=drafter)  # fmt: skip
            figures = {"tokens_per_s": out.tokens_per_s, "draft_tokens": k}
            if drafter is not None:
                stats = drafter.stats
                figures.update(acceptance=stats.acceptance, tokens_per_step=stats.tokens_per_step)
        return figures, out.tokens

    plain, tokens = run()
    modes = {"off": plain, "mtp": run(k)[0]}
    limit = engine.plan.options["max_draft"]
    for j in range(1, min(3, limit) + 1):
        modes[f"perfect_k{j}"] = run(j, tokens)[0]
    for figures in modes.values():
        figures["speedup"] = figures["tokens_per_s"] / plain["tokens_per_s"]
    return modes


def bench_hf(spec: ModelSpec, weights: dict, device, dtype, *, batch, prompt_len, decode) -> dict:
    """transformers' DeepseekV4ForCausalLM, eager, on the same (dense) weights."""
    model = hf_model(spec, weights, device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, spec.vocab_size, (batch, prompt_len), generator=gen).to(device)
    with torch.no_grad():
        model(ids)  # warm up
        decoder = HfDecoder(model)
        seconds = timed(lambda: decoder.prefill(ids), device)
        token = decoder.prefill(ids).argmax(-1, keepdim=True)
        decoder.step(token)
        per_token = timed(lambda: decoder.step(token), device, repeat=decode)
    return {
        "prefill_tokens_per_s": batch * prompt_len / seconds,
        "decode_ms_per_token": per_token * 1e3,
        "decode_tokens_per_s": batch / per_token,
    }


class HfDecoder:
    """transformers' model decoding with its own cache: `prefill(ids)`, then `step(tokens)`,
    each giving the logits at the last position. The cache's keyword is `cache` from
    transformers 5.2x on and `past_key_values` before (`pyproject` allows 5.17 on)."""

    def __init__(self, model):
        self.model, self.key, self.cache = model, "cache", None

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(ids, use_cache=True)
        self.key = "cache" if hasattr(out, "cache") else "past_key_values"
        self.cache = getattr(out, self.key)
        return out.logits[:, -1]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(tokens, **{self.key: self.cache}, use_cache=True)
        self.cache = getattr(out, self.key)
        return out.logits[:, -1]


def hf_model(spec: ModelSpec, weights: dict, *, device, dtype):
    """transformers' model of `spec` holding `weights` (official names, dense), in memory."""
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    from v4c.runtime.checkpoint.hf import hf_units
    from v4c.spec.config_io import spec_to_config

    with torch.device(device):
        model = DeepseekV4ForCausalLM(DeepseekV4Config(**spec_to_config(spec, "hf"))).to(dtype)
    state = {}
    for unit in hf_units(spec, dtype):
        stored = unit.encode([weights[t.name] for t in unit.logical])
        state.update((s.name, x) for s, x in zip(unit.stored, stored))
    model.load_state_dict(state, strict=True)
    return model.eval()
