"""Writing a checkpoint folder in the official or the HF layout.

The weights are checked against the spec first (names, shapes, integer vs float), so a bad
dict fails before any file is touched. Shards are contiguous runs of layout units, balanced
by bytes, a weight and its scale (and all experts of one projection) always together.
config.json is written last: a folder with a config.json is a complete write.
Same inputs give byte-identical files (safetensors orders its header itself; the index and
config are sorted JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from v4c.errors import CheckpointError
from v4c.runtime.checkpoint.hf import hf_units
from v4c.runtime.checkpoint.layout import Unit, nbytes, official_units
from v4c.runtime.checkpoint.read import CONFIG, INDEX
from v4c.spec import ModelSpec
from v4c.spec.config_io import spec_to_config
from v4c.spec.tensors import checkpoint_tensors

SINGLE = "model.safetensors"


def write_official(
    folder: Path,
    spec: ModelSpec,
    weights: dict[str, Tensor],
    *,
    shards: int = 1,
    requantised: bool = False,
) -> int:
    """The official release layout (quantised per the spec's `storage`) + its config.json,
    and model.safetensors.index.json when `shards` > 1. Returns the tensors written.
    `requantised`: the weights are dequantised FP8/FP4 values (a conversion back to the
    official layout): each block gets the scale its release had (`larger_exact_scales`)."""
    folder = Path(folder)
    units = official_units(spec)
    check_weights(spec, weights, units)
    groups = split_shards(units, shards)
    files = shard_names(shards)
    _prepare(folder, files + ([INDEX] if shards > 1 else []))
    weight_map, total = {}, 0
    for file, group in zip(files, groups):
        tensors = _encode(group, weights, spec.quant.block if requantised else None)
        _save(folder / file, tensors)
        weight_map.update(dict.fromkeys(tensors, file))
        total += sum(t.nbytes for t in tensors.values())
    if shards > 1:
        _write_json(folder / INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
    _write_json(folder / CONFIG, spec_to_config(spec, "official"))
    return len(weight_map)


def write_hf(
    folder: Path,
    spec: ModelSpec,
    weights: dict[str, Tensor],
    *,
    dtype: torch.dtype = torch.bfloat16,
) -> int:
    """The HF transformers layout in `dtype` (logical fp32 tensors stay fp32) + the HF
    config.json, one file, whose `dtype` is `dtype` (transformers loads the model in it).
    MTP tensors in `weights` are not written (HF has no MTP). Returns the tensors written."""
    folder = Path(folder)
    meta = spec.meta.model_copy(update={"torch_dtype": str(dtype).removeprefix("torch.")})
    spec = spec.model_copy(update={"meta": meta})
    units = hf_units(spec, dtype)
    check_weights(spec, weights, units)
    _prepare(folder, [SINGLE])
    tensors = _encode(units, weights)
    _save(folder / SINGLE, tensors)
    _write_json(folder / CONFIG, spec_to_config(spec, "hf"))
    return len(tensors)


def shard_names(shards: int) -> list[str]:
    """model.safetensors, or model-00001-of-0000N.safetensors ... as HF names shards."""
    if shards == 1:
        return [SINGLE]
    return [f"model-{k:05d}-of-{shards:05d}.safetensors" for k in range(1, shards + 1)]


def check_weights(spec: ModelSpec, weights: dict[str, Tensor], units: list[Unit]) -> None:
    """Every tensor the units encode is in `weights` with its shape; no name foreign to the spec."""
    problems = []
    for t in (t for u in units for t in u.logical):
        w, shape = weights.get(t.name), ((t.stack,) if t.stack else ()) + t.shape
        if w is None:
            problems.append(f"weights: {t.name}: missing tensor")
        elif tuple(w.shape) != shape:
            problems.append(f"weights: {t.name}: shape {list(w.shape)}, expected {list(shape)}")
        elif w.is_floating_point() == (t.dtype == "i64"):
            kind = "an integer" if t.dtype == "i64" else "a floating-point"
            problems.append(f"weights: {t.name}: dtype {w.dtype}, expected {kind} dtype")
    known = {t.name for t in checkpoint_tensors(spec)}
    problems += [
        f"weights: {name}: unexpected tensor (not in {spec.name})"
        for name in weights
        if name not in known
    ]
    if problems:
        raise CheckpointError("\n".join(problems))


def split_shards(units: list[Unit], shards: int) -> list[list[Unit]]:
    """`shards` contiguous, non-empty runs of units; a new run starts once the runs so far
    hold their share of the bytes (or when each remaining unit must open a run)."""
    if not 1 <= shards <= len(units):
        raise CheckpointError(f"shards: expected 1 to {len(units)}, got {shards}")
    sizes = [sum(nbytes(s.dtypes[0], s.shape) for s in u.stored) for u in units]
    total, done, groups = sum(sizes), 0, [[]]
    for i, (unit, size) in enumerate(zip(units, sizes)):
        to_open = shards - len(groups)
        if (
            groups[-1]
            and to_open
            and (done * shards >= total * len(groups) or len(units) - i == to_open)
        ):
            groups.append([])
        groups[-1].append(unit)
        done += size
    return groups


def _encode(
    units: list[Unit], weights: dict[str, Tensor], block: tuple[int, int] | None = None
) -> dict[str, Tensor]:
    """The stored tensors of `units`; with the FP8 `block`, at the release's scales."""
    from v4c.runtime.checkpoint.requantise import larger_exact_scales

    out = {}
    for unit in units:
        stored = unit.encode([weights[t.name] for t in unit.logical])
        if block is not None:
            stored = larger_exact_scales(unit, stored, block)
        out.update((s.name, x.contiguous().cpu()) for s, x in zip(unit.stored, stored))
    return out


def _prepare(folder: Path, produced: list[str]) -> None:
    """Create `folder`; refuse shards or an index this write would not replace (a reader
    would take them for part of the checkpoint)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"{folder}: cannot create: {err.strerror or err}") from None
    found = [p.name for p in folder.glob("*.safetensors")] + [INDEX] * (folder / INDEX).exists()
    stale = ", ".join(sorted(set(found) - set(produced)))
    if stale:
        raise CheckpointError(
            f"{folder}: holds {stale} from another checkpoint; write into an empty folder"
        )


def _save(path: Path, tensors: dict[str, Tensor]) -> None:
    """safetensors writes its files owner-only (0600); they get the mode an ordinary file
    gets, like the folder's config.json (0644 under the usual umask)."""
    try:
        save_file(tensors, path, metadata={"format": "pt"})
        os.chmod(path, 0o666 & ~_umask())
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write: {err.strerror or err}") from None


def _umask() -> int:
    """The process's umask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_json(path: Path, data: dict) -> None:
    try:
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write: {err.strerror or err}") from None
