"""The caches of a step graph or plan, allocated: one tensor per `state` (sliding window,
compressor state, compressed KV, indexer keys), sized for a number of sequences (the cache
rows, `N`) and a longest sequence.

Both executors describe their states the same way (key -> symbolic shape, IR dtype, fill),
and both hold IR-bf16 values in one chosen torch dtype; this is the one place that turns
such a description into tensors.
"""

from __future__ import annotations

from typing import Mapping

import torch

from v4c.ir.types import Dim, resolve_dim, torch_dtype


def new_caches(
    states: Mapping[str, tuple[tuple[Dim, ...], str, str]],
    batch: int,
    max_seq: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """`states`: key -> (symbolic shape, IR dtype, fill "zeros" | "-inf"); `batch` sequences
    are the cache rows `N`."""
    env = {"N": batch, "S": max_seq}
    caches = {}
    for key, (shape, ir_dtype, fill) in states.items():
        size = [resolve_dim(d, env) for d in shape]
        value = float("-inf") if fill == "-inf" else 0.0
        caches[key] = torch.full(size, value, dtype=torch_dtype(ir_dtype, dtype), device=device)
    return caches
