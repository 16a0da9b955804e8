"""The IR dtype table: names, byte sizes and the torch dtypes that hold them."""

from __future__ import annotations

import pytest
import torch

from v4c.ir.types import DTYPE_BYTES, ir_dtype, torch_dtype


def test_each_dtype_has_its_torch_dtype_and_size():
    for name, size in DTYPE_BYTES.items():
        assert torch.empty((), dtype=torch_dtype(name)).element_size() == size
    assert [torch_dtype(n) for n in ("bf16", "fp32", "i64", "i32")] == [
        torch.bfloat16, torch.float32, torch.int64, torch.int32
    ]  # fmt: skip


def test_bf16_values_are_held_in_the_run_dtype():
    assert torch_dtype("bf16", torch.float32) is torch.float32
    assert torch_dtype("fp32", torch.bfloat16) is torch.float32
    assert torch_dtype("i64", torch.float32) is torch.int64


def test_names_as_torch_prints_them():
    assert ir_dtype(str(torch.bfloat16)) == ir_dtype("bf16") == "bf16"
    assert ir_dtype(str(torch.int32)) == "i32"
    assert ir_dtype(str(torch.float16)) is None and ir_dtype("fp8:128x128") is None


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match="bad dtype 'fp16'"):
        torch_dtype("fp16")
