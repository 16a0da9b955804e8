"""Shared by the checkpoint and quant tests: a small spec (tiny with a 512-token vocabulary,
still FP8 + FP4), the oracle of what the official layout keeps of a weight, and one torch
thread for tests of many small tensors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from v4c.ir.semantics.quant import (
    fp4_dequantize,
    fp4_quantize,
    fp8_block_dequantize,
    fp8_block_quantize,
)
from v4c.spec import ModelSpec, load_spec, spec_from_data
from v4c.spec.tensors import TensorInfo


def small_spec_with(**changes) -> ModelSpec:
    data = load_spec("tiny").model_dump(mode="json") | {"name": "tiny-512", "vocab_size": 512}
    return spec_from_data(data | changes)


def rounded(t: TensorInfo, w: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """What the official layout keeps of `w`: quantise -> dequantise per storage, fp32."""
    if t.storage == "fp8":
        return fp8_block_dequantize(
            *fp8_block_quantize(w, spec.quant.block), spec.quant.block, torch.float32
        )
    if t.storage == "fp4":
        return fp4_dequantize(*fp4_quantize(w), torch.float32)
    return w.to(torch.bfloat16).float() if t.dtype == "bf16" else w


@contextmanager
def one_thread() -> Iterator[None]:
    """The tensors here are small: on a busy 2-core machine, handing each op to a second
    OpenMP thread costs ~100x the op itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
