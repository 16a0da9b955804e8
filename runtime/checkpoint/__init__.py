"""Checkpoint folders: load any of the layouts a V4 checkpoint comes in, write the
official and the HF one, and generate the tiny default model's checkpoint.

A folder holds config.json (official or HF layout), one `*.safetensors` file or several
listed by model.safetensors.index.json (then only the listed shards are read), and maybe a
tokenizer.json and other files, which are not read here.

Layouts (`detect`, which tells them apart by how well each fits the tensors):
plain and official (the release) under official names; hf, the names transformers' modules
hold; hf-saved, hf-saved-fp8 and hf-resaved, what transformers' `save_pretrained` writes
(`saved`). The hf ones have no MTP: loading them returns no `mtp.*` tensors, and
the caller decides whether it needs them. A folder that fits none is a CheckpointError
naming the layouts tried.

Whatever the layout, `load_checkpoint` returns official names -> dequantised tensors, routed
experts stacked [E, ...] under the `{e}` name: the keys of `checkpoint_tensors(spec)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import Tensor

from v4c.errors import CheckpointError
from v4c.paths import need_folder
from v4c.runtime.checkpoint.detect import Layout, detect_units
from v4c.runtime.checkpoint.read import check_units, open_shards, read_spec, read_units
from v4c.runtime.checkpoint.write import write_hf, write_official
from v4c.runtime.checkpoint.pieces import Ranges, rank_ranges
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.ir.plan import Plan
from v4c.ir.semantics.quant import QuantWeight
from v4c.spec import ModelSpec, load_spec
from v4c.spec.parallel import Grid
from v4c.spec.tensors import checkpoint_tensors

__all__ = ["Layout", "load_checkpoint", "load_weights", "make_tiny", "write_hf", "write_official"]

TINY_SHARDS = 2


def load_checkpoint(
    folder: Path,
    spec: ModelSpec | None = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    names: set[str] | None = None,
    keep_quantised: frozenset[str] = frozenset(),
    pieces: Mapping[str, Ranges] | None = None,
) -> tuple[ModelSpec, dict[str, Tensor]]:
    """(spec, official name -> tensor). The spec comes from config.json unless given; a
    given spec must agree with config.json (compared as config.json in the file's layout).
    Logical bf16 tensors come back in `dtype`, fp32 ones in fp32, tid2eid as int64.
    Every header is checked before any data is read; every problem is a CheckpointError.
    `names`: read only the stored tensors these logical tensors need (a plan's params).
    `keep_quantised`: these FP8/FP4 tensors come back as `QuantWeight`s, not dequantised
    (for kernels that dequantise on the fly); in other layouts they are plain tensors.
    `pieces`: tensor -> the ranges of it to return (one rank's piece of a split plan,
    `runtime.pieces.rank_ranges`), read alone from the files wherever the layout allows."""
    folder = need_folder(folder, "checkpoint folder", CheckpointError)
    spec = read_spec(folder, spec)
    with ExitStack() as stack:
        shards = open_shards(folder, stack)
        _, units = detect_units(shards, spec)
        check_units(units, shards)
        if names is not None:
            units = [u for u in units if any(t.name in names for t in u.logical)]
        weights = read_units(units, shards, dtype, device, progress, keep_quantised, pieces)
    wanted = names if names is not None else {t.name for t in checkpoint_tensors(spec)}
    return spec, {
        t.name: weights[t.name]
        for t in checkpoint_tensors(spec)
        if t.name in weights and t.name in wanted
    }


def load_weights(
    folder: Path,
    plan: Plan,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    rank: tuple[Grid, int] | None = None,
    names: set[str] | None = None,
) -> dict[str, Tensor | QuantWeight]:
    """The weights `plan` needs from `folder` (`names` of them, default all), as the plan
    holds them (`Plan.params`): those whose format is quantised as stored, the others
    dense; `rank` (grid, rank): only that rank's pieces of the weights the plan splits. The
    folder's config.json must agree with the plan's spec."""
    pieces = rank_ranges(plan.params, *rank) if rank is not None else None
    _, tensors = load_checkpoint(
        folder, ModelSpec.model_validate(plan.model), dtype=dtype, device=device,
        progress=progress, names=set(plan.params) if names is None else names,
        keep_quantised=quantised_weights(plan), pieces=pieces,
    )  # fmt: skip
    return tensors


def quantised_weights(plan: Plan) -> frozenset[str]:
    """The weights the plan keeps in their stored FP8/FP4 format."""
    return frozenset(n for n, p in plan.params.items() if p.format.quantised)


def make_tiny(folder: Path, seed: int = 0) -> None:
    """The tiny default model (`specs/tiny.yaml`) with `random_weights(spec, seed)`, written in
    the official layout (FP8 weights, FP4 experts) in two shards. Same seed, same bytes."""
    spec = load_spec("tiny")
    write_official(Path(folder), spec, random_weights(spec, seed), shards=TINY_SHARDS)
