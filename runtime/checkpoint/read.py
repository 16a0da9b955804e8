"""Reading a checkpoint folder: its config.json, its shards' headers, a check of every stored
tensor against the spec before any data is read, then one memory-mapped read per needed
tensor, decoded to the logical tensors.

All header problems of a folder are reported together, one line each as
`file: tensor: problem`; a corrupt file stops at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from v4c.errors import CheckpointError, SpecError
from v4c.ir.types import torch_dtype
from v4c.runtime.checkpoint.layout import Stored, Unit, nbytes
from v4c.runtime.checkpoint.pieces import Index, Ranges, take
from v4c.runtime.progress import progress_bar
from v4c.spec import ModelSpec
from v4c.spec.config_io import detect_format, spec_from_config, spec_to_config

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
MAX_PROBLEMS = 20
_ABSENT = object()


@dataclass(frozen=True)
class Header:
    """A stored tensor as its file's header describes it."""

    file: Path
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, self.shape)


@dataclass(frozen=True)
class Shards:
    headers: dict[str, Header]
    handles: dict[Path, Any]  # open `safe_open` files
    where: Path  # what a missing tensor is reported against: the index, the one file, or the folder


def read_spec(folder: Path, spec: ModelSpec | None) -> ModelSpec:
    """The folder's spec from config.json, or `spec` after checking config.json agrees with it."""
    path = folder / CONFIG
    if not path.is_file():
        if spec is None:
            raise CheckpointError(
                f"{path}: missing; a checkpoint folder needs one (or pass a spec)"
            )
        return spec
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read JSON: {err}") from None
    try:
        found = spec_from_config(
            config, spec.name if spec else folder.resolve().name, source=str(path)
        )
    except SpecError as err:
        raise CheckpointError(
            "\n".join([f"{path}: not a valid DeepSeek-V4 config", *err.problems])
        ) from None
    if spec is None:
        return found
    fmt = detect_format(config)
    # `meta` (the nominal dtype, the writer's version, ...) does not change the computation:
    # a folder written in fp32 runs the spec of its bf16 release
    ours = spec_to_config(spec.model_copy(update={"meta": found.meta}), fmt)
    theirs = spec_to_config(found, fmt)
    problems = [
        f"{path}: {key}: {_show(theirs, key)} in the file, {_show(ours, key)} in the spec"
        for key in sorted(ours.keys() | theirs.keys())
        if ours.get(key, _ABSENT) != theirs.get(key, _ABSENT)
    ]
    if problems:
        raise CheckpointError(_summary(problems))
    return spec


def open_shards(folder: Path, stack: ExitStack) -> Shards:
    """Open every shard (memory-mapped) and read its header; `stack` closes them."""
    files, weight_map, where = _find_files(folder)
    headers: dict[str, Header] = {}
    handles, problems = {}, []
    for file in files:
        handles[file] = handle = _open(file, stack)
        for name, header in _headers(file, handle):
            if name in headers:
                problems.append(f"{file}: {name}: also in {headers[name].file}")
            elif weight_map is not None and weight_map.get(name) != file:
                problems.append(f"{file}: {name}: not listed for this file in {where}")
            else:
                headers[name] = header
    for name, file in (weight_map or {}).items():
        if name not in headers:
            problems.append(f"{file}: {name}: listed in {where} but not in the file")
    if problems:
        raise CheckpointError(_summary(problems))
    return Shards(headers, handles, where)


def check_units(units: list[Unit], shards: Shards) -> None:
    """Every stored tensor of the layout present with an accepted dtype and its shape, and
    nothing else in the files."""
    expected = {s.name: s for u in units for s in u.stored}
    headers, problems = shards.headers, []
    for s in expected.values():
        h = headers.get(s.name)
        if h is None and s.scale_of in headers:
            problems.append(f"{headers[s.scale_of].file}: {s.scale_of}: missing its scale {s.name}")
        elif h is None:
            problems.append(f"{shards.where}: {s.name}: missing tensor")
        elif h.dtype not in s.dtypes:
            accepted = s.dtypes[0] if len(s.dtypes) == 1 else "one of " + ", ".join(s.dtypes)
            problems.append(f"{h.file}: {s.name}: dtype {h.dtype}, expected {accepted}")
        elif h.shape != s.shape:
            problems.append(f"{h.file}: {s.name}: shape {list(h.shape)}, expected {list(s.shape)}")
    for name in sorted(headers.keys() - expected.keys()):
        weight = name.removesuffix(".scale") + ".weight"
        if name.endswith(".scale") and weight in expected:
            problems.append(
                f"{headers[name].file}: {name}: extra scale: {weight} is stored unquantised"
            )
        else:
            problems.append(f"{headers[name].file}: {name}: unexpected tensor")
    if problems:
        raise CheckpointError(_summary(problems))


def read_units(
    units: list[Unit],
    shards: Shards,
    dtype: torch.dtype,
    device: str | torch.device,
    progress: bool,
    keep: frozenset[str] = frozenset(),
    pieces: Mapping[str, Ranges] | None = None,
) -> dict[str, Tensor]:
    """Read each stored tensor once, decode each unit: official name -> tensor, logical bf16
    in `dtype`, logical fp32 in fp32, tid2eid int64; quantised tensors named in `keep` stay
    in their stored format (a QuantWeight). `pieces`: for these tensors only that piece
    (ranges per logical dim; a rank's), read alone from the memory-mapped files where the
    layout says where it lies (`Unit.piece`), else cut from the whole after decoding."""
    pieces = pieces or {}
    rank = {file: k + 1 for k, file in enumerate(sorted(shards.handles))}
    plans = [(unit, _reads(unit, pieces, shards.headers)) for unit in units]
    total = sum(nbytes for _, reads in plans for _, _, nbytes in reads)
    out = {}
    with progress_bar(progress) as bar:
        task = bar.add_task("reading", total=total)
        for unit, reads in plans:
            xs = []
            for s, index, size in reads:
                h = shards.headers[s.name]
                xs.append(_tensor(shards.handles[h.file], s.name, h.file, index).to(device))
                label = f"{h.file.name} ({rank[h.file]}/{len(rank)})"
                bar.update(task, advance=size, description=label)
            names, t0 = [t.name for t in unit.logical], unit.logical[0]
            cut = [n for n in names if n in pieces and unit.piece is None]
            kept = unit.keep(xs) if unit.keep and any(n in keep for n in names) else []
            if kept and all(n in keep for n in names):
                out.update(zip(names, kept))
            else:
                target = torch_dtype(t0.dtype, dtype)
                decoded = unit.decode(xs, target)
                out.update(zip(names, decoded))
                out.update((n, q) for n, q in zip(names, kept) if n in keep)
            out.update((n, take(out[n], pieces[n], n)) for n in cut)
    return out


def _reads(
    unit: Unit, pieces: Mapping[str, Ranges], headers: dict[str, Header]
) -> list[tuple[Stored, Index | None, int]]:
    """(stored tensor, the part to read or None: all, its bytes) for one unit."""
    name = unit.logical[0].name
    if unit.piece is None or name not in pieces:
        return [(s, None, headers[s.name].nbytes) for s in unit.stored]
    reads = []
    for position, index in unit.piece(pieces[name]):
        s = unit.stored[position]
        shape = tuple(len(range(*part.indices(n))) for part, n in zip(index, s.shape))
        reads.append((s, index, nbytes(headers[s.name].dtype, shape)))
    return reads


def _find_files(folder: Path) -> tuple[list[Path], dict[str, Path] | None, Path]:
    """(shard files, tensor -> file from the index or None, where missing tensors are reported)."""
    index = folder / INDEX
    if not index.exists():
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{folder}: no *.safetensors files")
        return files, None, files[0] if len(files) == 1 else folder
    weight_map = _read_index(index)
    files = sorted(set(weight_map.values()))
    problems = []
    for file in files:
        if not file.is_file():
            names = sorted(n for n, f in weight_map.items() if f == file)
            problems.append(f"{index}: {names[0]}: in shard {file.name}, which does not exist")
    if problems:
        raise CheckpointError(_summary(problems))
    return files, weight_map, index


def _read_index(index: Path) -> dict[str, Path]:
    """model.safetensors.index.json -> tensor name -> shard path."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{index}: cannot read JSON: {err}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise CheckpointError(f'{index}: expected a "weight_map" object of tensor -> file name')
    return {name: index.parent / file for name, file in weight_map.items()}


def _open(file: Path, stack: ExitStack) -> Any:
    try:
        return stack.enter_context(safe_open(file, framework="pt"))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{file}: not a readable safetensors file (corrupt or truncated): {err}"
        ) from None


def _headers(file: Path, handle: Any) -> list[tuple[str, Header]]:
    out = []
    for name in handle.keys():
        part = handle.get_slice(name)
        out.append((name, Header(file, part.get_dtype(), tuple(part.get_shape()))))
    return out


def _tensor(handle: Any, name: str, file: Path, index: Index | None = None) -> Tensor:
    """The stored tensor, or only its part `index` (the memory-mapped slice)."""
    try:
        if index is None:
            return handle.get_tensor(name)
        return handle.get_slice(name)[index]
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{file}: {name}: cannot read: {err}") from None


def _show(config: dict, key: str) -> str:
    return json.dumps(config[key])[:60] if key in config else "absent"


def _summary(problems: list[str]) -> str:
    shown = problems[:MAX_PROBLEMS]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
    return "\n".join(shown)
