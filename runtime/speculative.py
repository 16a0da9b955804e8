"""Acceptance of drafted tokens: which of K draft tokens the main model keeps, and its next one.

A verify step feeds the main model the last committed token and the K draft tokens, so its
logits [B, K+1, V] give p_j, the main model's distribution for the token after the first j
drafts (j = 0..K). Two rules, both exact:

- Greedy (temperature 0): keep the longest prefix of the draft equal to the main model's own
  argmax, then that argmax at the first mismatch (or after the last draft). Every emitted
  token is an argmax of the main model given the tokens before it, so the output is the
  non-speculative greedy output token for token.
- Sampling: the rejection rule of speculative sampling (Leviathan et al. 2023, Chen et al.
  2023). Draft x_j was drawn from q_j; accept it with probability min(1, p_j(x)/q_j(x)); at
  the first rejection draw from normalise((p_j - q_j)+) and stop; when all K are accepted
  draw a bonus token from p_K. Each emitted token is then distributed as p_j, the
  non-speculative distribution. p and q are what the `Sampler` samples from
  (`Sampler.probabilities`: temperature, top-k, top-p), so a drafter must draw its tokens
  with the same sampler (a deterministic drafter passes one-hot q).

Why it is written this way: it runs inside a decode step a CUDA graph can hold, so nothing
reads a device value on the host and every shape is fixed. Rows that accept different
numbers of tokens come out as counts `accepted` [B] and a fixed [B, K+1] block of tokens;
the draws use the sampler's seeded generator on the logits' device (uniforms for the
accept tests, the exponential race of `runtime/sampler.py` for the final token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from v4c.errors import SamplingError
from v4c.runtime.sampler import Sampler

# Token id written past a row's last emitted token: not an id, so a caller that feeds it fails.
PAD = -1
# The smallest Exp(1) draw used (as in the sampler: E = 0 would make a zero weight 0/0 = NaN).
_TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class Acceptance:
    """The outcome of one verify step; both tensors on the logits' device.

    accepted [B] int64: draft tokens kept per row (0..K). tokens [B, K+1] int64: row b emits
    tokens[b, : accepted[b] + 1] (the kept drafts, then the main model's own token); the
    entries after those are PAD."""

    accepted: torch.Tensor
    tokens: torch.Tensor


def accept(
    sampler: Sampler,
    draft: torch.Tensor,
    logits: torch.Tensor,
    draft_probs: torch.Tensor | None = None,
) -> Acceptance:
    """draft [B, K] int64: the drafted ids; logits [B, K+1, V]: the main model's at the
    verified positions; draft_probs [B, K, V]: q, the distributions the drafts were drawn
    from (needed when the sampler samples, unused when it is greedy)."""
    _check(draft, logits, draft_probs, sampler.temperature > 0.0)
    if sampler.temperature == 0.0:
        return _greedy(draft, logits)
    batch, width, vocab = logits.shape
    p = sampler.probabilities(logits.reshape(batch * width, vocab)).view(batch, width, vocab)
    return _rejection(draft, p, draft_probs.float(), sampler.generator(logits.device))


def _greedy(draft: torch.Tensor, logits: torch.Tensor) -> Acceptance:
    best = logits.argmax(dim=-1)  # [B, K+1]: the main model's own token at each position
    accepted = _prefix_length(draft == best[:, :-1])
    return Acceptance(accepted, _emitted(best, accepted))


def _rejection(
    draft: torch.Tensor, p: torch.Tensor, q: torch.Tensor, generator: torch.Generator
) -> Acceptance:
    """p [B, K+1, V], q [B, K, V]: rows sum to 1. Shapes below: B rows, K drafts, V vocab."""
    batch, width, vocab = p.shape
    picked = draft.unsqueeze(-1)  # [B, K, 1]
    p_x = p[:, :-1].gather(-1, picked).squeeze(-1)  # [B, K]
    q_x = q.gather(-1, picked).squeeze(-1)  # [B, K]
    u = torch.rand(p_x.shape, generator=generator, device=p.device)
    # u < p/q written without the division: q(x) = 0 (a draft q could not draw) then accepts
    # iff p(x) > 0, and p(x) = 0 never accepts (u >= 0).
    accepted = _prefix_length(u * q_x < p_x)  # [B]
    # The distribution of the final token: (p_j - q_j)+ at the first rejection j, p_K (the
    # bonus) when all are kept: the same formula with q_K = 0.
    q_ext = torch.cat([q, q.new_zeros(batch, 1, vocab)], dim=1)  # [B, K+1, V]
    at = accepted.view(batch, 1, 1).expand(batch, 1, vocab)
    p_at, q_at = p.gather(1, at).squeeze(1), q_ext.gather(1, at).squeeze(1)  # [B, V]
    residual = (p_at - q_at).clamp_min_(0.0)
    # (p - q)+ is all zero only when p = q up to rounding, where rejection has probability
    # 0; were it reached by rounding, p itself is the right fallback (no NaN, no sync).
    empty = residual.sum(dim=-1, keepdim=True) == 0
    weights = torch.where(empty, p_at, residual)
    noise = torch.empty_like(weights).exponential_(generator=generator).clamp_min_(_TINY)
    final = (weights / noise).argmax(dim=-1)  # [B]: the exponential race, as in the sampler
    tokens = torch.cat([draft, draft.new_zeros(batch, 1)], dim=1)
    tokens.scatter_(1, accepted.unsqueeze(1), final.unsqueeze(1))
    return Acceptance(accepted, _emitted(tokens, accepted))


def _prefix_length(ok: torch.Tensor) -> torch.Tensor:
    """ok [B, K] bool -> [B] int64: the number of leading True entries per row."""
    return ok.long().cumprod(dim=-1).sum(dim=-1)


def _emitted(tokens: torch.Tensor, accepted: torch.Tensor) -> torch.Tensor:
    """tokens [B, K+1] with the entries after index accepted[b] set to PAD."""
    index = torch.arange(tokens.shape[1], device=tokens.device)
    return tokens.masked_fill(index > accepted.unsqueeze(1), PAD)


def _check(draft, logits, draft_probs, sampled: bool) -> None:
    if logits.dim() != 3 or draft.dim() != 2 or draft.dtype != torch.int64:
        raise SamplingError(
            f"acceptance needs int64 draft [B, K] and logits [B, K+1, V], got draft "
            f"{draft.dtype} {list(draft.shape)} and logits {list(logits.shape)}"
        )
    batch, k = draft.shape
    if logits.shape[:2] != (batch, k + 1) or logits.device != draft.device:
        raise SamplingError(
            f"logits must be [{batch}, {k + 1}, V] on {draft.device} for a draft of "
            f"{list(draft.shape)}, got {list(logits.shape)} on {logits.device}"
        )
    if not sampled:
        return
    if draft_probs is None:
        raise SamplingError(
            "a sampling acceptance needs draft_probs, the distributions the drafts were drawn from"
        )
    if draft_probs.shape != (batch, k, logits.shape[-1]) or draft_probs.device != draft.device:
        raise SamplingError(
            f"draft_probs must be [{batch}, {k}, {logits.shape[-1]}] on {draft.device}, "
            f"got {list(draft_probs.shape)} on {draft_probs.device}"
        )
