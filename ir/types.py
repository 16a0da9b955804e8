"""Tensor types of IR values: a shape of ints and symbolic dims, and a dtype.

Symbolic dims are resolved when a plan is made: `B` sequences in a step, `T` tokens per
sequence in the step, `N` cache rows (the sequences the caches hold; a step's `slots` input
names the cache row of each of its B rows, so a step may advance any subset of them), `S` the
longest sequence a cache holds. A dim may be a quotient of a
symbol, `S/128`: the number of complete ratio-128 windows in `S` tokens (floor division).

This module owns the IR dtypes: their names, byte sizes and torch dtypes. The torch mapping
imports torch when called, so that building and compiling a graph does not import torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DTYPE_BYTES = {"bf16": 2, "fp32": 4, "i64": 8, "i32": 4}
DTYPES = tuple(DTYPE_BYTES)
_TORCH_NAMES = {"bf16": "bfloat16", "fp32": "float32", "i64": "int64", "i32": "int32"}
Dim = int | str
_DIM = re.compile(r"^([A-Z])(?:/(\d+))?$")


def check_dim(dim: Dim) -> Dim:
    if isinstance(dim, bool) or not isinstance(dim, (int, str)):
        raise ValueError(f"bad dim {dim!r}")
    if isinstance(dim, int) and dim < 0 or isinstance(dim, str) and not _DIM.match(dim):
        raise ValueError(f"bad dim {dim!r}: an int >= 0, a symbol like T, or S/128")
    return dim


def resolve_dim(dim: Dim, env: dict[str, int]) -> int:
    if isinstance(dim, int):
        return dim
    symbol, divisor = _DIM.match(dim).groups()
    if symbol not in env:
        raise KeyError(f"dim {dim!r}: no value for {symbol}")
    return env[symbol] // int(divisor or 1)


def torch_dtype(name: str, bf16_as: torch.dtype | None = None) -> torch.dtype:
    """The torch dtype that holds values of IR dtype `name`. `bf16_as`: the dtype a run holds
    IR-bf16 values in (fp32 in an fp32 reference run), default bfloat16."""
    import torch

    if name not in _TORCH_NAMES:
        raise ValueError(f"bad dtype {name!r}, expected one of {DTYPES}")
    if name == "bf16" and bf16_as is not None:
        return bf16_as
    return getattr(torch, _TORCH_NAMES[name])


def ir_dtype(text: str) -> str | None:
    """The IR name of a dtype written as the IR does (`bf16`) or as torch prints it
    (`torch.bfloat16`); None for a dtype the IR does not have."""
    if text in DTYPES:
        return text
    names = {f"torch.{torch_name}": name for name, torch_name in _TORCH_NAMES.items()}
    return names.get(text)


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"bad dtype {self.dtype!r}, expected one of {DTYPES}")
        object.__setattr__(self, "shape", tuple(check_dim(d) for d in self.shape))

    def __str__(self) -> str:
        return f"[{','.join(map(str, self.shape))}]{self.dtype}"

    def with_shape(self, *shape: Dim) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)

    def resolve(self, env: dict[str, int]) -> tuple[int, ...]:
        return tuple(resolve_dim(d, env) for d in self.shape)

    @staticmethod
    def parse(text: str) -> TensorType:
        match = re.fullmatch(r"\[([^\]]*)\](\w+)", text.strip())
        if not match:
            raise ValueError(f"bad tensor type {text!r}")
        dims = [d.strip() for d in match.group(1).split(",") if d.strip()]
        return TensorType(tuple(int(d) if d.isdigit() else d for d in dims), match.group(2))
