"""How a checkpoint layout stores the tensors of a spec: the names, dtypes and shapes the
files hold, and the codec between them and the logical tensors of `checkpoint_tensors`.

A layout is a list of `Unit`s. A unit is the smallest group of stored tensors that decodes
on its own (a weight and its `.scale`; all experts of one projection; HF's merged
`gate_up_proj`) together with the logical tensors it yields. Reader and writers share the
units, so what one writes the other reads by construction. The official-name units also
say which parts of their stored tensors hold a piece of the logical one (`piece`), so a
rank of a TP × EP grid reads its piece alone.

This module holds the official-name layouts (quantised per the spec's `storage`, and plain);
`hf` transformers' module names, `saved` what transformers writes.
Shapes: E experts, O rows, I inputs (§13.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from math import prod

import torch
from torch import Tensor

from v4c.ir.types import torch_dtype
from v4c.ir.weights import WeightFormat, stored_format
from v4c.ir.semantics.quant import (
    QuantWeight,
    fp4_dequantize,
    fp4_quantize,
    fp8_block_dequantize,
    fp8_block_quantize,
)
from v4c.runtime.checkpoint.pieces import Index, Ranges, dense_index, quant_index
from v4c.spec import ModelSpec
from v4c.spec.tensors import TensorInfo, checkpoint_tensors

# safetensors dtype names (the files' own, not the IR's: those are in ir/types.py); an
# unquantised float tensor may be stored in any of FLOATS
FLOATS = ("BF16", "F32", "F16")
SAFETENSORS_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8, "F8_E4M3": 1, "F8_E8M0": 1, "I8": 1}


def nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of a stored tensor of a safetensors `dtype`."""
    return SAFETENSORS_BYTES[dtype] * prod(shape)


@dataclass(frozen=True)
class Stored:
    """One tensor in the files: the dtypes a reader accepts, the first being what the
    official writer stores (it sizes the shards)."""

    name: str
    dtypes: tuple[str, ...]
    shape: tuple[int, ...]
    scale_of: str | None = None  # for a `.scale`: the weight it belongs to


Decode = Callable[[list[Tensor], torch.dtype], list[Tensor]]  # stored -> logical (in dtype)
Encode = Callable[[list[Tensor]], list[Tensor]]  # logical -> stored


Keep = Callable[[list[Tensor]], list[QuantWeight]]  # stored -> each logical tensor as stored
# a piece (ranges per logical dim) -> the stored tensors that hold it, by position in the
# unit's `stored`, and the part of each: read those, and `decode`/`keep` give the piece
Piece = Callable[[Ranges], list[tuple[int, Index]]]


@dataclass(frozen=True)
class Unit:
    stored: tuple[Stored, ...]
    logical: tuple[TensorInfo, ...]
    decode: Decode
    encode: Encode
    keep: Keep | None = None  # quantised units: the logical tensors as QuantWeights
    piece: Piece | None = None  # one logical tensor whose pieces can be read on their own


def renamed(unit: Unit, rename: Callable[[str], str]) -> Unit:
    """The same unit under other stored names (the codec works by position, not by name)."""
    stored = tuple(
        replace(s, name=rename(s.name), scale_of=s.scale_of and rename(s.scale_of))
        for s in unit.stored
    )
    return replace(unit, stored=stored)


def scale_name(weight: str) -> str:
    """`X.weight` -> `X.scale` (§13.1)."""
    return weight.removesuffix(".weight") + ".scale"


def official_units(spec: ModelSpec, *, quantised: bool = True) -> list[Unit]:
    """The official release layout (flat names, `{e}` expanded per expert). `quantised=False`
    is the plain layout: the same names, every tensor dequantised, no scales."""
    return [official_unit(t, spec, quantised) for t in checkpoint_tensors(spec)]


def official_unit(t: TensorInfo, spec: ModelSpec, quantised: bool = True) -> Unit:
    """How the official layout (or, not `quantised`, the plain one) stores `t`."""
    codec = codec_of(t, spec) if quantised else _Plain(t)
    quant = hasattr(codec, "keep")
    if not t.stack:
        keep = (lambda xs: [codec.keep(xs)]) if quant else None
        whole = partial(codec.piece, t.name)
        return Unit(codec.stored(t.name), (t,), codec.decode, codec.encode, keep, whole)
    names = [t.name.format(e=e) for e in range(t.stack)]
    per = len(codec.stored(names[0]))  # stored tensors per expert

    def piece(ranges: Ranges) -> list[tuple[int, Index]]:
        """The experts of ranges[0], each one's part ranges[1:]."""
        (first, stop), inner = ranges[0], ranges[1:]
        parts = codec.piece(t.name, inner)
        return [(e * per + j, index) for e in range(first, stop) for j, index in parts]

    def decode(xs: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
        # expert-major [w0, s0, w1, s1, ...] -> one stack per part, decoded at once
        return codec.decode([torch.stack(xs[j::per]) for j in range(per)], dtype)

    def encode(values: list[Tensor]) -> list[Tensor]:
        parts = codec.encode(values)  # each [E, ...]
        return [part[e] for e in range(t.stack) for part in parts]

    def keep(xs: list[Tensor]) -> list[QuantWeight]:
        return [codec.keep([torch.stack(xs[j::per]) for j in range(per)])]

    stored = tuple(s for n in names for s in codec.stored(n))
    return Unit(stored, (t,), decode, encode, keep if quant else None, piece)


def codec_of(t: TensorInfo, spec: ModelSpec) -> _Plain | _FP8 | _FP4:
    """How one tensor (one expert's, for routed experts) is stored: its spec storage's
    format (`stored_format`, the one reading of it)."""
    fmt = stored_format(t.storage, t.dtype, spec.quant)
    if fmt.kind == "fp8":
        return _FP8(t, fmt.block)
    if fmt.kind == "fp4":
        return _FP4(t, fmt.block[1])
    return _Plain(t)


@dataclass(frozen=True)
class _Plain:
    """Unquantised: floats in any of FLOATS (written bf16/fp32 as logical), tid2eid I64."""

    t: TensorInfo

    def stored(self, name: str) -> tuple[Stored, ...]:
        dtypes = {"bf16": FLOATS, "fp32": ("F32", "BF16", "F16"), "i64": ("I64",)}[self.t.dtype]
        return (Stored(name, dtypes, self.t.shape),)

    def decode(self, xs: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
        return [xs[0].to(dtype)]

    def encode(self, values: list[Tensor]) -> list[Tensor]:
        return [values[0].to(torch_dtype(self.t.dtype)).contiguous()]

    def piece(self, name: str, ranges: Ranges) -> list[tuple[int, Index]]:
        return [(0, dense_index(ranges))]


@dataclass(frozen=True)
class _FP8:
    """e4m3 weight [O, I] + E8M0 scale [⌈O/bo⌉, ⌈I/bi⌉] (§13.2)."""

    t: TensorInfo
    block: tuple[int, int]

    def stored(self, name: str) -> tuple[Stored, ...]:
        (o, i), (bo, bi) = self.t.shape, self.block
        scale_shape = (-(-o // bo), -(-i // bi))
        return (
            Stored(name, ("F8_E4M3",), self.t.shape),
            Stored(scale_name(name), ("F8_E8M0",), scale_shape, scale_of=name),
        )

    def decode(self, xs: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
        return [fp8_block_dequantize(xs[0], xs[1], self.block, dtype)]

    @property
    def format(self) -> WeightFormat:
        return WeightFormat.fp8(self.block)

    def keep(self, xs: list[Tensor]) -> QuantWeight:
        return QuantWeight(xs[0], xs[1], self.format)

    def piece(self, name: str, ranges: Ranges) -> list[tuple[int, Index]]:
        return list(enumerate(quant_index(self.format, ranges, name)))

    def encode(self, values: list[Tensor]) -> list[Tensor]:
        return list(fp8_block_quantize(values[0], self.block))


@dataclass(frozen=True)
class _FP4:
    """Packed e2m1 int8 [O, I/2] + E8M0 scale [O, I/32] (§13.2)."""

    t: TensorInfo
    block: int

    def stored(self, name: str) -> tuple[Stored, ...]:
        o, i = self.t.shape
        return (
            Stored(name, ("I8",), (o, i // 2)),
            Stored(scale_name(name), ("F8_E8M0",), (o, i // self.block), scale_of=name),
        )

    def decode(self, xs: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
        return [fp4_dequantize(xs[0], xs[1], dtype)]

    @property
    def format(self) -> WeightFormat:
        return WeightFormat.fp4(self.block)

    def keep(self, xs: list[Tensor]) -> QuantWeight:
        return QuantWeight(xs[0], xs[1], self.format)

    def piece(self, name: str, ranges: Ranges) -> list[tuple[int, Index]]:
        return list(enumerate(quant_index(self.format, ranges, name)))

    def encode(self, values: list[Tensor]) -> list[Tensor]:
        return list(fp4_quantize(values[0], self.block))
