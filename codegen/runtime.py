"""Host-side helpers rendered kernels import: tables computed once per constant set. (The
scratch split kernels use is the bound program's: runtime/scratch.py.)"""

from __future__ import annotations

import torch


def rope_table(
    rope_dim: int, theta: float, yarn: tuple | list | None, device: torch.device
) -> torch.Tensor:
    """The RoPE frequencies [rope_dim/2] fp32 of a layer on `device`, as the reference
    computes them; made once per device (the reference's own cache)."""
    from v4c.ir.ops.rope import _freqs

    return _freqs(rope_dim, theta, tuple(yarn) if yarn is not None else None, torch.device(device))
