"""RMSNorm (V4_REFERENCE.md §2, §4.1): the one normalisation every V4 block uses.

Computed in fp32 with the weight applied in fp32 before the single cast back, as the official
code keeps norm weights in fp32. `weight=None` is the weightless per-head q norm of §4.1.
The official attention writes that one inline in bf16 instead (`q *= rsqrt(mean(q²) + eps)`
on a bf16 q), which `inline_q_norm` reproduces for numerics: official.
"""

from __future__ import annotations

import torch
from torch import Tensor

from v4c.ir.semantics.quant import round_to


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """x / sqrt(mean(x², -1) + eps) [* weight] over the last dim; returns x's dtype."""
    xf = x.float()  # [..., n]
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()  # [n]
    return y.to(x.dtype)


def inline_q_norm(x: Tensor, eps: float) -> Tensor:
    """The weightless q norm as the official code computes it: in x's dtype, op by op.

    Each official op on the bf16 q rounds its result to bf16 (the mean accumulates in fp32
    first): q², mean(q²), + eps, rsqrt, and the product. Returns x's dtype; for fp32 x it
    is the fp32 norm."""
    dt = x.dtype
    xf = x.float()
    square = round_to(xf.square(), dt)  # official: q.square() is bf16
    var = round_to(square.mean(-1, keepdim=True), dt)  # official: .mean() writes bf16
    scale = round_to(torch.rsqrt(round_to(var + eps, dt)), dt)  # official: + eps, rsqrt: bf16
    return (xf * scale).to(dt)  # official: q *= ... rounds the product
