"""RMSNorm (V4_REFERENCE.md §2, §4.1): the one normalisation every V4 block uses.

Computed in fp32 with the weight applied in fp32 before the single cast back, as the official
code keeps norm weights in fp32. `weight=None` is the weightless per-head q norm of §4.1.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """x / sqrt(mean(x², -1) + eps) [* weight] over the last dim; returns x's dtype."""
    xf = x.float()  # [..., n]
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()  # [n]
    return y.to(x.dtype)
