"""Host-side helpers rendered kernels import: tables computed once per constant set, and the
scratch that split kernels share on a device."""

from __future__ import annotations

from functools import cache

import torch


def rope_table(
    rope_dim: int, theta: float, yarn: tuple | list | None, device: torch.device
) -> torch.Tensor:
    """The RoPE frequencies [rope_dim/2] fp32 of a layer on `device`, as the reference
    computes them; made once per device (the reference's own cache)."""
    from v4c.ir.ops.core import _freqs

    return _freqs(rope_dim, theta, tuple(yarn) if yarn is not None else None, torch.device(device))


def hc_split_scratch(
    tokens: int, splits: int, rows: int, block_t: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The split-K HC kernel's scratch for `tokens`: partials [tokens, splits, rows + 1] fp32
    and one arrival counter per block of `block_t` tokens (int32, 0 between launches: each
    launch's last program resets its own), views of buffers shared by every HC launch on
    `device` (launches on a device run in order on its stream)."""
    blocks = -(-tokens // block_t)
    part = _buffer(_bucket(tokens * splits * (rows + 1)), torch.float32, torch.device(device))
    count = _buffer(_bucket(blocks), torch.int32, torch.device(device))
    return part[: tokens * splits * (rows + 1)], count[:blocks]


def _bucket(n: int) -> int:
    """Sizes rounded up to a power of two: a few buffers serve every step length."""
    return 1 << max(n - 1, 0).bit_length()


@cache
def _buffer(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed buffer made once per (size, dtype, device) and never freed, so a bound step
    allocates nothing and a captured CUDA graph's pointers stay valid."""
    return torch.zeros(numel, dtype=dtype, device=device)
