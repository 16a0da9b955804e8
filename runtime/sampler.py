"""Next-token sampling: greedy, or temperature with top-k and top-p (nucleus) filters.

Why its own module: the generation loop should not care how a token is chosen, and a
seeded `torch.Generator` (one per device, owned by the sampler) makes sampled runs
reproducible without touching torch's global RNG. Defaults are greedy; V4's
`generation_config.json` suggests temperature 1.0, top_p 1.0 (V4_REFERENCE §15.4).
"""

from __future__ import annotations

import torch


class Sampler:
    def __init__(
        self,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ):
        if not temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = no top-k filter), got {top_k}")
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [B, V] fp32 -> token ids [B] (int64, on the logits' device)."""
        if logits.dim() != 2:
            raise ValueError(f"logits must be [batch, vocab], got shape {tuple(logits.shape)}")
        if self.temperature == 0.0:
            return logits.argmax(dim=-1)
        probs = self.probabilities(logits)
        generator = self._generator(logits.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution `sample` draws from when temperature > 0: [B, V], rows sum to 1."""
        # shifted so the largest is 0, in fp64: a tiny temperature then gives 0 and large
        # negatives, where fp32 would make 0 / 0 and inf - inf
        logits = logits.double()
        scaled = (logits - logits.amax(dim=-1, keepdim=True)) / self.temperature
        if 0 < self.top_k < scaled.shape[-1]:
            scaled = _keep_top_k(scaled, self.top_k)
        probs = torch.softmax(scaled, dim=-1).float()
        if self.top_p < 1.0:
            probs = _keep_top_p(probs, self.top_p)
        return probs

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            generator = torch.Generator(device=device)
            if self.seed is None:
                generator.seed()
            else:
                generator.manual_seed(self.seed)
            self._generators[device] = generator
        return self._generators[device]


def _keep_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit outside each row's k largest to -inf (exactly k survive)."""
    values, indices = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def _keep_top_p(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Keep each row's smallest set of most likely tokens whose mass reaches p; renormalise.

    A token is kept when the mass of the tokens strictly more likely than it is still
    below p, so the most likely token always survives.
    """
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    drop = mass_before >= p
    drop[..., 0] = False  # even when p is below fp32's smallest number
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)
