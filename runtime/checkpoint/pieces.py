"""One rank's piece of a weight: which part of a logical tensor a rank holds (the plan's
`split` of each param, `v4c.spec.parallel.piece`), and the matching part of a stored FP8 or
FP4 tensor and its E8M0 scales, so that the piece is read, not the whole tensor.

Ranges are [start, stop) per logical dim. FP8 e4m3 [.., O, I] has one scale per [bo, bi]
block: a piece keeps the scale blocks it overlaps, which is exact when it starts on a
block or lies inside one (`v4c.spec.parallel.grid_problems` refuses other splits). FP4
[.., O, I/2] packs two inputs a byte with one scale per `block` inputs: a piece along I
starts and ends on a scale block.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from v4c.errors import CheckpointError
from v4c.ir.semantics.quant import QuantWeight
from v4c.ir.weights import PlanWeight, WeightFormat
from v4c.spec.parallel import Grid, Split, piece, whole_shape

Ranges = tuple[tuple[int, int], ...]
Index = tuple[slice, ...]


def dense_index(ranges: Ranges) -> Index:
    return tuple(slice(a, b) for a, b in ranges)


def quant_index(fmt: WeightFormat, ranges: Ranges, name: str) -> tuple[Index, Index]:
    """(index into the stored data, index into its scales) of the logical `ranges` of a
    weight stored in `fmt` (FP8 or FP4)."""
    lead = len(ranges) - 2
    data, scale = list(dense_index(ranges[:lead])), list(dense_index(ranges[:lead]))
    for k, ((a, b), size) in enumerate(zip(ranges[lead:], fmt.block)):
        if fmt.kind == "fp4" and k == 1:
            if a % size or b % size:
                raise CheckpointError(f"{name}: inputs [{a}, {b}) cut its FP4 scale blocks")
            data.append(slice(a // 2, b // 2))
            scale.append(slice(a // size, b // size))
            continue
        if a % size and a // size != (b - 1) // size:
            raise CheckpointError(f"{name}: [{a}, {b}) on dim {lead + k} cuts its scale blocks")
        data.append(slice(a, b))
        scale.append(slice(a // size, -(-b // size)))
    return tuple(data), tuple(scale)


def take(value: torch.Tensor | QuantWeight, ranges: Ranges, name: str):
    """The piece `ranges` of a dense tensor or of a weight kept quantised."""
    if isinstance(value, torch.Tensor):
        return value[dense_index(ranges)].contiguous()
    data, scale = quant_index(value.format, ranges, name)
    return QuantWeight(value.data[data].contiguous(), value.scale[scale].contiguous(), value.format)


def plan_splits(params: Mapping[str, PlanWeight]) -> dict[str, tuple[Split, ...]]:
    """Checkpoint tensor -> its split, for the params of a plan that are split."""
    return {n: p.split for n, p in params.items() if p.split}


def rank_ranges(params: Mapping[str, PlanWeight], grid: Grid, rank: int) -> dict[str, Ranges]:
    """Checkpoint tensor -> the ranges of `rank`'s piece, for the split params of a plan
    (`Plan.params`: the piece's shape, its split)."""
    out = {}
    for name, splits in plan_splits(params).items():
        shape = whole_shape(params[name].shape, splits)
        out[name] = piece(shape, splits, grid, rank)
    return out


def rank_weights(
    weights: Mapping[str, torch.Tensor | QuantWeight],
    params: Mapping[str, PlanWeight],
    grid: Grid,
    rank: int,
) -> dict[str, torch.Tensor | QuantWeight]:
    """`rank`'s pieces of whole weights already in memory (tests, random weights), for
    the params of a plan: split ones cut, the others as they are."""
    ranges = rank_ranges(params, grid, rank)
    return {
        name: take(weights[name], ranges[name], name) if name in ranges else weights[name]
        for name in params
        if name in weights
    }


def graph_params(graph) -> dict[str, PlanWeight]:
    """`Plan.params`-style entries (dense) of a graph's params, for `rank_weights`."""
    return {
        n.op.tensor: PlanWeight(
            tuple(n.op.shape), n.op.dtype, WeightFormat.dense(n.op.dtype), n.op.stack, n.op.split
        )
        for n in graph.nodes()
        if n.op.source == "param"
    }
