"""The embedded tiny model's checkpoint in the cache: made on first use, checked on every
use, remade when damaged.

Why its own module: a cached folder outlives the process that wrote it. A run killed while
writing leaves a `.tiny-*` folder; a shard can be truncated or deleted by hand; two first
runs can start at once; the cache can sit on a read-only disk. Each of these must end in a
working checkpoint or one clear error, never in an error on every later run.

A folder is whole when its config.json and index are there and every shard the index names
is as long as its own safetensors header says (a cheap check: no tensor data is read).
Writers take an exclusive lock on
`.tiny.lock` beside the folder, so a `.tiny-*` folder seen while holding it is left over from
a killed run, and a second first run waits for the first and then uses its folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from v4c.errors import CheckpointError
from v4c.runtime.checkpoint import TINY_SHARDS, make_tiny
from v4c.runtime.checkpoint.read import CONFIG, INDEX

TINY_SEED = 0


def tiny_checkpoint(root: Path, log: Callable[[str], None] = print) -> Path:
    """The tiny checkpoint under `root` (the cache folder), made or remade if needed."""
    folder = root / "checkpoints" / f"tiny-seed{TINY_SEED}"
    return cached_checkpoint(folder, partial(make_tiny, seed=TINY_SEED), "the tiny default", log)


def random_checkpoint(root: Path, spec, log: Callable[[str], None] = print) -> Path:
    """A checkpoint of `spec` with random weights (seed 0) in its official storage formats,
    cached under `root` by the spec's content, so a spec one wrote runs without weights."""
    from v4c.runtime.checkpoint import write_official
    from v4c.runtime.checkpoint.random_weights import random_weights
    from v4c.spec.config_io import spec_to_config

    config = json.dumps(spec_to_config(spec, "official"), sort_keys=True).encode()
    key = hashlib.sha256(config + spec.name.encode()).hexdigest()[:12]
    folder = root / "checkpoints" / f"random-{spec.name}-{key}"

    def make(out: Path) -> None:
        write_official(out, spec, random_weights(spec, seed=0), shards=TINY_SHARDS)

    return cached_checkpoint(folder, make, f"a random-weights {spec.name}", log)


def cached_checkpoint(folder: Path, make, what: str, log: Callable[[str], None]) -> Path:
    """`folder`, made by `make(path)` if missing or damaged (under the lock, atomically)."""
    if damage(folder) is None:
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / ".tiny.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            _make_locked(folder, make, what, log)
    except OSError as err:
        raise CheckpointError(
            f"cannot write {what} checkpoint to {folder}: {err.strerror or err}; "
            "set V4C_CACHE_DIR to a writable folder, or pass --checkpoint DIR"
        ) from None
    return folder


def damage(folder: Path) -> str | None:
    """None if `folder` is a whole checkpoint folder, else what is wrong with it."""
    if not folder.exists():
        return "missing"
    try:
        config = folder / CONFIG
        if not config.is_file():
            return f"{CONFIG} is missing"
        weight_map = json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"]
        for name in sorted(set(weight_map.values())):
            problem = _shard_damage(folder / name)
            if problem:
                return f"{name} {problem}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{INDEX} is unreadable ({err})"
    return None


def _shard_damage(path: Path) -> str | None:
    """Whether a safetensors file is as long as its header says (8-byte header length, the
    JSON header, then the data up to the largest end offset)."""
    if not path.is_file():
        return "is missing"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "is truncated"
        n = int.from_bytes(head, "little")
        if n > path.stat().st_size:
            return "is truncated"
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    size = path.stat().st_size
    return None if size == 8 + n + end else f"holds {size} bytes, not {8 + n + end}"


def _make_locked(folder: Path, make, what: str, log: Callable[[str], None]) -> None:
    problem = damage(folder)
    if problem is None:  # another run made it while this one waited for the lock
        return
    for stale in folder.parent.glob(".tiny-*"):  # left by a killed run: no writer is active
        shutil.rmtree(stale, ignore_errors=True)
    if folder.exists():
        log(f"the cached checkpoint in {folder} is damaged ({problem}); remaking it")
        shutil.rmtree(folder)
    else:
        log(f"making {what} checkpoint in {folder} (once)")
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tiny-"))
    try:
        make(tmp / "ckpt")
        os.replace(tmp / "ckpt", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
