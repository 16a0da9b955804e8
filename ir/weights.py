"""How a program holds one checkpoint weight: its `WeightFormat`, decided once by `lower`
from the spec's `quant` and `--weights`, recorded in the plan (`PlanWeight`) and only read
after that — by the loader (what to keep quantised), the kernels (what to dequantise or
feed to FP8 dots), the report (how many bytes) and the rank splitter (how scales split).

The formats (V4_REFERENCE §13.2):
- dense: a plain tensor in its IR dtype (`bf16` is held in the plan's activation dtype);
- fp8: e4m3 values [.., O, I] with one E8M0 scale per [block[0], block[1]] block;
- fp4: e2m1 codes packed two a byte [.., O, I/2] with one E8M0 scale per block[1] inputs
  of a row (block[0] is 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from v4c.spec.schema import Quant

Kind = Literal["dense", "fp8", "fp4"]
KINDS: tuple[Kind, ...] = ("dense", "fp8", "fp4")


@dataclass(frozen=True)
class WeightFormat:
    kind: Kind
    dtype: str  # dense: the IR dtype (bf16, fp32, i64); fp8: "e4m3"; fp4: "e2m1"
    block: tuple[int, int] = (1, 1)  # elements [out, in] per E8M0 scale (dense: none)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"weight format kind {self.kind!r} not in {KINDS}")
        if self.kind == "fp4" and self.block[0] != 1:
            raise ValueError(f"fp4 scales cover one row, not {self.block[0]}")

    @staticmethod
    def dense(dtype: str) -> WeightFormat:
        return WeightFormat("dense", dtype)

    @staticmethod
    def fp8(block: tuple[int, int] = (128, 128)) -> WeightFormat:
        return WeightFormat("fp8", "e4m3", (int(block[0]), int(block[1])))

    @staticmethod
    def fp4(block: int = 32) -> WeightFormat:
        return WeightFormat("fp4", "e2m1", (1, int(block)))

    @property
    def quantised(self) -> bool:
        return self.kind != "dense"

    def nbytes(self, shape: tuple[int, ...] | list[int], held: dict[str, int]) -> int:
        """Bytes of a weight of logical `shape` in this format, scales included; `held`:
        the bytes of each dense dtype as the program holds it."""
        n = prod(shape)
        if self.kind == "dense":
            return n * held[self.dtype]
        lead, (o, i), (bo, bi) = prod(shape[:-2]), shape[-2:], self.block
        scales = lead * ceil(o / bo) * ceil(i / bi)  # one E8M0 byte each
        return (n if self.kind == "fp8" else n // 2) + scales

    def __str__(self) -> str:
        if self.kind == "dense":
            return self.dtype
        if self.kind == "fp8":
            return f"fp8 e4m3 (e8m0 per {self.block[0]}x{self.block[1]})"
        return f"fp4 e2m1 (e8m0 per {self.block[1]})"

    @staticmethod
    def from_json(data: dict) -> WeightFormat:
        return WeightFormat(data["kind"], data["dtype"], tuple(data["block"]))


def stored_format(storage: str | None, dtype: str, quant: Quant) -> WeightFormat:
    """The format a checkpoint stores a tensor in: `storage` (`TensorInfo.storage`) fp8 or
    fp4 with the spec's scale blocks, else dense in its `dtype`."""
    if storage == "fp8":
        return WeightFormat.fp8(quant.block)
    if storage == "fp4":
        return WeightFormat.fp4(quant.expert_block)
    return WeightFormat.dense(dtype)


@dataclass(frozen=True)
class PlanWeight:
    """One checkpoint tensor as a plan holds it: the (rank's piece's) logical shape and IR
    dtype, `stack` experts on dim 0 (0: none), the rank's `split` of it
    (`v4c.spec.parallel`), and its format."""

    shape: tuple[int, ...]
    dtype: str
    format: WeightFormat
    stack: int = 0
    split: tuple[tuple, ...] = ()

    @staticmethod
    def from_json(data: dict) -> PlanWeight:
        return PlanWeight(
            tuple(data["shape"]), data["dtype"], WeightFormat.from_json(data["format"]),
            data["stack"], tuple(tuple(s) for s in data["split"]),
        )  # fmt: skip
