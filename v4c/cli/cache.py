"""`v4c cache info | clear`: where the cache is, what it holds, and removing it.

The cache holds what v4c makes and can make again: the tiny default checkpoint
(`checkpoints/`) and rendered kernels (`<v4c version>/<device>/kernels/`). `clear` removes
exactly those folders, never anything else a user keeps there (V4C_CACHE_DIR may name a
folder shared with other files).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import typer

from v4c.envs import cache_dir
from v4c.errors import V4CError

cache_app = typer.Typer(help="Where the cache is, what it holds; clear it.", no_args_is_help=True)

_VERSION = re.compile(r"\d+\.\d+\.\d+\S*")


def owned(root: Path) -> list[Path]:
    """The folders under `root` that v4c made: checkpoints/ and one per v4c version."""
    if not root.is_dir():
        return []
    found = [p for p in sorted(root.iterdir()) if p.is_dir() and _VERSION.fullmatch(p.name)]
    return ([root / "checkpoints"] if (root / "checkpoints").is_dir() else []) + found


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _where() -> str:
    if os.environ.get("V4C_CACHE_DIR"):
        return "$V4C_CACHE_DIR"
    return "$XDG_CACHE_HOME/v4c" if os.environ.get("XDG_CACHE_HOME") else "~/.cache/v4c"


@cache_app.command("info")
def info() -> None:
    """The cache folder (and which setting chose it), and the size of each part."""
    root = cache_dir()
    if root.exists() and not root.is_dir():
        raise V4CError(f"{root} (from {_where()}): is a file, not a folder; set V4C_CACHE_DIR")
    typer.echo(f"{root}  (from {_where()}; set V4C_CACHE_DIR to move it)")
    parts = owned(root)
    if not parts:
        typer.echo("  empty")
    total = 0
    for part in parts:
        n = size(part)
        total += n
        what = "checkpoints" if part.name == "checkpoints" else f"kernels of v{part.name}"
        typer.echo(f"  {_human(n):>10}  {part.name}/  ({what})")
    if parts:
        typer.echo(f"  {_human(total):>10}  in all")


@cache_app.command("clear")
def clear() -> None:
    """Remove the cached checkpoints and kernels (v4c makes them again when needed)."""
    root = cache_dir()
    parts = owned(root)
    freed = sum(size(p) for p in parts)
    for part in parts:
        try:
            shutil.rmtree(part)
        except OSError as err:
            raise V4CError(f"{part}: cannot remove: {err.strerror or err}") from None
    typer.echo(f"removed {len(parts)} folders ({_human(freed)}) from {root}")


def _human(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
