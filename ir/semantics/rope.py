"""Interleaved rotary embedding with optional YaRN frequency interpolation (V4_REFERENCE.md §4.3).

V4 rotates the trailing r channels of a head as r/2 complex numbers made of adjacent channel
pairs (2i, 2i+1), not the half-split `rotate_half` layout. Compressed (CSA/HCA) layers use YaRN
frequency interpolation only: there is no mscale on cos/sin and no softmax-scale change. The
inverse rotation (conjugate) undoes the RoPE that values carry because K = V (§8.3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _yarn_ramp(rope_dim: int, theta: float, yarn: dict) -> Tensor:
    """Per-pair blend weight in [0, 1]: 0 keeps f_i, 1 divides it by the YaRN factor."""

    def corr(rotations: float) -> float:  # the pair index that makes `rotations` turns
        original = yarn["original_max_position_embeddings"]
        return rope_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    lo = max(math.floor(corr(yarn["beta_fast"])), 0)
    hi = min(math.ceil(corr(yarn["beta_slow"])), rope_dim - 1)
    if hi == lo:  # the official ramp widens a degenerate range by 0.001
        hi += 0.001
    i = torch.arange(rope_dim // 2, dtype=torch.float32)
    return ((i - lo) / (hi - lo)).clamp(0, 1)


def rope_freqs(rope_dim: int, theta: float, yarn: dict | None) -> Tensor:
    """[r/2] fp32 frequencies f_i = theta^(-2i/r), YaRN-blended toward f_i/factor when given."""
    freqs = 1.0 / theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / rope_dim)
    if yarn is None:
        return freqs
    ramp = _yarn_ramp(rope_dim, theta, yarn)
    return freqs * (1 - ramp) + freqs / yarn["factor"] * ramp


def apply_rope(x: Tensor, positions: Tensor, freqs: Tensor, inverse: bool = False) -> Tensor:
    """Rotate the trailing 2*len(freqs) channels of x by angle positions * f (negated if inverse).

    x [B, T, ..., d], positions [B, T] int64 (broadcast over the middle dims), freqs [r/2].
    Returns x's dtype; the leading d - r channels pass through unchanged.
    """
    half = freqs.numel()
    angles = positions.float()[..., None] * freqs.float()  # [B, T, r/2]
    angles = angles.view(*angles.shape[:2], *([1] * (x.dim() - 3)), half)  # [B, T, 1.., r/2]
    cos, sin = angles.cos(), angles.sin()
    if inverse:
        sin = -sin
    pairs = x[..., -2 * half :].float().unflatten(-1, (half, 2))  # [B, T, .., r/2, 2]
    re, im = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1).flatten(-2)
    return torch.cat((x[..., : -2 * half], rotated.to(x.dtype)), dim=-1)
