"""A path a user named, checked for its kind before it is read: a missing path and one of
the wrong kind (a file where a folder is expected, or the reverse) are different mistakes,
and the message says which, instead of an OS error from deep inside ("Not a directory")."""

from __future__ import annotations

from pathlib import Path

from v4c.errors import V4CError


def need_folder(
    path: str | Path, what: str, error: type[V4CError] = V4CError, option: str = ""
) -> Path:
    """`path` if it is a folder, else `error` saying it is missing or is a file (after
    `option`, the command-line option that named it, when given)."""
    path, where = Path(path), f"{option}: " if option else ""
    if path.is_dir():
        return path
    if path.exists():
        raise error(f"{where}{path}: is a file, not a {what}")
    raise error(f"{where}{path}: no such {what}")


def need_file(path: str | Path, what: str, error: type[V4CError] = V4CError) -> Path:
    """`path` if it is a file (or a readable stream such as a pipe), else `error` saying
    it is missing or is a folder."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what}")
    if not path.exists():
        raise error(f"{path}: no such {what}")
    return path
