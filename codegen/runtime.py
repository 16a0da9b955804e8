"""Host-side helpers rendered kernels import: tables computed once per constant set."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=64)
def rope_table(rope_dim: int, theta: float, yarn: tuple | list | None) -> torch.Tensor:
    """The RoPE frequencies [rope_dim/2] fp32 of a layer, as the reference computes them."""
    from v4c.ir.ops.core import _freqs

    return _freqs(rope_dim, theta, tuple(yarn) if yarn is not None else None)
