"""Next-token sampling on the logits' device: greedy, or temperature with top-k and top-p.

Why it is written this way: a decode step that a CUDA graph holds may not read a tensor on
the host, branch on a tensor's value or make a tensor whose shape depends on values. So
both filters are fixed-shape masks over one stable sort (top-k fills the ranks past k with
-inf; top-p zeroes the ranks whose preceding mass already reaches p; a scatter puts the
weights back in id order), and the draw is the exponential race: with E_i ~ Exp(1)
independent, argmax_i w_i / E_i is token i with probability w_i / sum(w), an exact
categorical draw (Gumbel-max in another form, as the official `generate.py` samples:
V4_REFERENCE §14). Sorting the whole row (vLLM's torch sampler does so for top-p)
keeps both filters exact and their ties fixed; it runs only when a filter is on. The noise
comes from a seeded `torch.Generator` on the logits' device, owned by the sampler,
so sampled runs are reproducible without touching torch's global RNG. Only the ids [B]
come out; the caller decides when they go to the host (`generate` calls `.tolist()`).

A captured step owns its output and scratch: `sample(logits, out=ids, buffers=bufs)`, with
`bufs = sampler.buffers(B, V, device)`, allocates nothing. Ties rank the lower id first,
for top-k and top-p alike. Defaults are greedy; V4's `generation_config.json` suggests
temperature 1.0, top_p 1.0 (V4_REFERENCE §15.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from v4c.errors import SamplingError

# The smallest Exp(1) draw used: E = 0 would make a zero weight 0/0 = NaN, which argmax picks.
_TINY = torch.finfo(torch.float32).tiny
# The SamplerBuffers tensors that are not fp32 [B, V]: (dtype, width; None = V)
_LAYOUT = {"row": (torch.float32, 1), "order": (torch.int64, None), "cut": (torch.bool, None)}


@dataclass
class SamplerBuffers:
    """Scratch for sampling logits of one shape [B, V] on one device (made by
    `Sampler.buffers`; only the tensors its sampler's filters need are present)."""

    shape: tuple[int, int]
    device: torch.device
    weights: torch.Tensor | None = None  # [B, V] fp32: scaled logits, weights, race scores
    noise: torch.Tensor | None = None  # [B, V] fp32: the Exp(1) draws
    row: torch.Tensor | None = None  # [B, 1] fp32: a row's max, then its sum
    ranked: torch.Tensor | None = None  # [B, V] fp32: sorted logits, then their weights
    order: torch.Tensor | None = None  # [B, V] int64: the token id at each rank
    mass: torch.Tensor | None = None  # [B, V] fp32: the probability ranked before each token
    cut: torch.Tensor | None = None  # [B, V] bool: mass >= top_p


class Sampler:
    def __init__(
        self,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ):
        if not temperature >= 0.0:
            raise SamplingError(f"temperature must be >= 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise SamplingError(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise SamplingError(f"top_k must be >= 0 (0 = no top-k filter), got {top_k}")
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def sample(
        self,
        logits: torch.Tensor,
        *,
        out: torch.Tensor | None = None,
        buffers: SamplerBuffers | None = None,
    ) -> torch.Tensor:
        """logits [B, V] -> token ids [B] int64 on the logits' device (written into `out`
        when given). With `out` and `buffers` the call allocates nothing."""
        self._check(logits, out, buffers)
        if out is None:
            out = torch.empty(logits.shape[0], dtype=torch.int64, device=logits.device)
        if self.temperature == 0.0:
            return torch.argmax(logits, dim=-1, out=out)
        if buffers is None:
            buffers = self.buffers(*logits.shape, device=logits.device)
        weights = self._weights(logits, buffers)
        noise = buffers.noise.exponential_(generator=self.generator(logits.device))
        return torch.argmax(weights.div_(noise.clamp_min_(_TINY)), dim=-1, out=out)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution `sample` draws from: [B, V] fp32, rows sum to 1 (at temperature 0
        the one-hot of the argmax)."""
        self._check(logits, None, None)
        if self.temperature == 0.0:
            hot = logits.argmax(dim=-1, keepdim=True)
            return torch.zeros(logits.shape, device=logits.device).scatter_(-1, hot, 1.0)
        weights = self._weights(logits, self.buffers(*logits.shape, device=logits.device))
        return weights / weights.sum(dim=-1, keepdim=True)

    def buffers(self, batch: int, vocab: int, device: torch.device | str) -> SamplerBuffers:
        """The scratch `sample` needs for logits [batch, vocab] on `device`."""
        bufs = SamplerBuffers(shape=(batch, vocab), device=_canonical(device))
        for name in self._needed(vocab):
            dtype, width = _LAYOUT.get(name, (torch.float32, None))
            tensor = torch.empty(batch, width or vocab, dtype=dtype, device=bufs.device)
            setattr(bufs, name, tensor)
        return bufs

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The sampler's generator on `device` (seeded on first use); a CUDA graph that
        captures `sample` registers it (`CUDAGraph.register_generator_state`). "cuda" and
        "cuda:0" name one generator; a known name is looked up without touching the device."""
        device = torch.device(device)
        if device not in self._generators:
            canonical = _canonical(device)
            if canonical not in self._generators:
                generator = torch.Generator(device=canonical)
                if self.seed is None:
                    generator.seed()
                else:
                    generator.manual_seed(self.seed)
                self._generators[canonical] = generator
            self._generators[device] = self._generators[canonical]
        return self._generators[device]

    def _needed(self, vocab: int) -> list[str]:
        """The `SamplerBuffers` tensors that `sample` uses on logits of width `vocab`."""
        if self.temperature == 0.0:
            return []
        names = ["weights", "noise", "row"]
        if self._ranks(vocab):
            names += ["ranked", "order"]
        if self.top_p < 1.0:
            names += ["mass", "cut"]
        return names

    def _ranks(self, vocab: int) -> bool:
        """Whether a filter is on, so that tokens must be ranked (top-k >= V keeps all)."""
        return 0 < self.top_k < vocab or self.top_p < 1.0

    def _weights(self, logits: torch.Tensor, bufs: SamplerBuffers) -> torch.Tensor:
        """softmax(logits / T) over the top-k, with the ranks past the top-p nucleus set to 0:
        [B, V] fp32 in id order, in `bufs.weights`, not renormalised (the race needs no sum).

        A rank is in the nucleus when the mass ranked before it is still below p, so the
        most likely token always is; after top-k the mass is that of the k survivors."""
        # shifted so each row's largest is 0 before the division: a tiny temperature then
        # gives 0 and -inf, where the scaled logits themselves would overflow to inf - inf
        weights = bufs.weights.copy_(logits)
        torch.amax(weights, dim=-1, keepdim=True, out=bufs.row)
        # (a temperature below fp32's smallest normal would itself round to 0: 0 / 0)
        temperature = max(self.temperature, torch.finfo(torch.float32).tiny)
        weights.sub_(bufs.row).div_(temperature)  # [B, V] scaled logits, max 0
        if not self._ranks(logits.shape[-1]):
            return _softmax_(weights, bufs.row)
        ranked, order = torch.sort(
            weights, dim=-1, descending=True, stable=True, out=(bufs.ranked, bufs.order)
        )
        if 0 < self.top_k < logits.shape[-1]:
            ranked[:, self.top_k :].fill_(float("-inf"))
        _softmax_(ranked, bufs.row)
        if self.top_p < 1.0:
            mass = torch.cumsum(ranked, dim=-1, out=bufs.mass).sub_(ranked)
            cut = torch.ge(mass, self.top_p, out=bufs.cut)
            cut[:, :1].fill_(False)  # the top rank stays even for a p below fp32 resolution
            ranked.masked_fill_(cut, 0.0)
        return weights.scatter_(-1, order, ranked)  # order is a permutation: all rewritten

    def _check(self, logits, out, bufs) -> None:
        if logits.dim() != 2:
            raise SamplingError(f"logits must be [batch, vocab], got shape {tuple(logits.shape)}")
        batch, device = logits.shape[0], logits.device
        if out is not None and (
            out.shape != (batch,) or out.dtype != torch.int64 or out.device != device
        ):
            raise SamplingError(
                f"out must be int64 [{batch}] on {device}, got {out.dtype} "
                f"{list(out.shape)} on {out.device}"
            )
        if bufs is not None and (bufs.shape != tuple(logits.shape) or bufs.device != device):
            raise SamplingError(
                f"buffers are for {list(bufs.shape)} on {bufs.device}, logits are "
                f"{list(logits.shape)} on {device}: make them with sampler.buffers(B, V, device)"
            )
        if bufs is not None and any(
            getattr(bufs, n) is None for n in self._needed(logits.shape[1])
        ):
            raise SamplingError("buffers were made by a sampler with other filters")


def _softmax_(x: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of x [B, V], in place; `row` [B, 1] is scratch."""
    torch.amax(x, dim=-1, keepdim=True, out=row)
    x.sub_(row).exp_()
    torch.sum(x, dim=-1, keepdim=True, out=row)
    return x.div_(row)


def _canonical(device: torch.device | str) -> torch.device:
    """The device as a tensor's `.device` names it ("cuda" -> "cuda:0"), for comparisons."""
    return torch.empty(0, device=device).device
