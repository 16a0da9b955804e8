"""The TP × EP grid of ranks a model runs on, and which splits a spec allows.

Ranks are numbered `rank = ep_index * tp + tp_index`: the TP groups are runs of consecutive
ranks inside each EP slot (the TP all-reduce of every attention layer stays among
neighbouring GPUs, on one node's NVLink when tp <= GPUs per node), and an EP group takes
one rank of each TP group. Three axes name the groups a tensor is split over or a
collective runs in: `tp` (the ranks of one TP group), `ep` (those of one EP group), `world`
(all of them).

A split is a tuple `(dim, parts, axis)`: the tensor's `dim` cut into `parts` equal
contiguous pieces, piece `i` held by the rank whose index along `axis` is `i`.
This module imports nothing heavy: the CLI validates `--tp/--ep` with it before compiling.
"""

from __future__ import annotations

from dataclasses import dataclass

from v4c.spec.schema import ModelSpec

AXES = ("tp", "ep", "world")
# GiB a process gets on one H200 (141 GB HBM3e; about 139 GiB free on an idle device): what one
# rank's memory is checked against by default
DEVICE_GB = 139.0
Split = tuple[int, int, str]  # (dim, parts, axis)


@dataclass(frozen=True)
class Grid:
    tp: int = 1
    ep: int = 1

    @property
    def world(self) -> int:
        return self.tp * self.ep

    def size(self, axis: str) -> int:
        return {"tp": self.tp, "ep": self.ep, "world": self.world}[axis]

    def index(self, axis: str, rank: int) -> int:
        """`rank`'s position in its group along `axis`."""
        return {"tp": rank % self.tp, "ep": rank // self.tp, "world": rank}[axis]

    def groups(self, axis: str) -> list[list[int]]:
        """Every group of `axis`, each its ranks in index order (the order the collectives
        concatenate in), the groups in a fixed order (every rank makes them alike)."""
        if axis == "tp":
            return [[e * self.tp + t for t in range(self.tp)] for e in range(self.ep)]
        if axis == "ep":
            return [[e * self.tp + t for e in range(self.ep)] for t in range(self.tp)]
        return [list(range(self.world))]

    def group(self, axis: str, rank: int) -> list[int]:
        return next(g for g in self.groups(axis) if rank in g)


def local_shape(shape: tuple[int, ...], splits: tuple[Split, ...]) -> tuple[int, ...]:
    """The shape of one rank's piece of a tensor of `shape`."""
    out = list(shape)
    for dim, parts, _ in splits:
        out[dim] //= parts
    return tuple(out)


def whole_shape(shape: tuple[int, ...], splits: tuple[Split, ...]) -> tuple[int, ...]:
    """The tensor's shape, from one rank's piece."""
    out = list(shape)
    for dim, parts, _ in splits:
        out[dim] *= parts
    return tuple(out)


def piece(
    shape: tuple[int, ...], splits: tuple[Split, ...], grid: Grid, rank: int
) -> tuple[tuple[int, int], ...]:
    """[start, stop) per dim of `rank`'s piece of a (whole) tensor of `shape`."""
    ranges = [(0, n) for n in shape]
    for dim, parts, axis in splits:
        step = shape[dim] // parts
        start = grid.index(axis, rank) * step
        ranges[dim] = (start, start + step)
    return tuple(ranges)


def grid_problems(spec: ModelSpec, tp: int, ep: int) -> list[str]:
    """Why `spec` cannot be split tp × ep (empty: it can): one line per rule, naming the
    spec field and what must divide it; the caller says which setting asked for the split."""
    a, moe, world = spec.attention, spec.moe, tp * ep
    if min(tp, ep) < 1:
        return [f"tp and ep must be >= 1, got tp={tp}, ep={ep}"]
    out = []
    rules = [
        ("attention.num_heads", a.num_heads, tp, "tp"),
        ("attention.o_groups", a.o_groups, tp, "tp"),
        ("attention.indexer.num_heads", a.indexer.num_heads, tp, "tp"),
        ("moe.num_experts", moe.num_experts, ep, "ep"),
        ("moe.intermediate_size", moe.intermediate_size, tp, "tp (each expert's inner dim)"),
        ("moe.intermediate_size", moe.intermediate_size, world, "tp*ep (the shared expert)"),
        ("vocab_size", spec.vocab_size, world, "tp*ep (embedding and lm_head rows)"),
    ]
    for field, value, parts, axis in rules:
        if value % parts:
            out.append(f"{field} ({value}) is not divisible by {axis} = {parts}")
    if spec.quant.expert_format == "fp4" and not moe.intermediate_size % tp:
        inner = moe.intermediate_size // tp
        if inner % spec.quant.expert_block:
            out.append(
                f"moe.intermediate_size / tp = {inner} is not a multiple of the FP4 "
                f"scale block ({spec.quant.expert_block}): each expert's slice needs whole blocks"
            )
    if spec.quant.weights == "fp8":
        out += _fp8_problems(spec, tp, world)
    return out


def _fp8_problems(spec: ModelSpec, tp: int, world: int) -> list[str]:
    """An FP8 weight split along a dim keeps its block scales only if every piece starts on
    a scale block or lies inside one block."""
    a, block = spec.attention, max(spec.quant.block)
    cuts = [
        ("attention.num_heads * head_dim (wq_b rows)", a.num_heads * a.head_dim, tp),
        ("attention.o_groups * o_lora_rank (wo_a rows, wo_b columns)",
         a.o_groups * a.o_lora_rank, tp),
        ("attention.indexer heads * head_dim (its wq_b rows)",
         a.indexer.num_heads * a.indexer.head_dim, tp),
        ("moe.intermediate_size (the shared expert)", spec.moe.intermediate_size, world),
    ]  # fmt: skip
    out = []
    for what, size, parts in cuts:
        if parts > 1 and size % parts == 0 and not _block_aligned(size // parts, block):
            out.append(
                f"{what} = {size} in {parts} pieces of {size // parts} cuts the FP8 "
                f"scale blocks of {block}"
            )
    return out


def _block_aligned(step: int, block: int) -> bool:
    """Pieces of `step` start on a block, or each lies inside one block."""
    return step % block == 0 or block % step == 0
