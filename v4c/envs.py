"""Every environment variable v4c reads, in one place, with its default."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = "V4C_CACHE_DIR"


def cache_dir() -> Path:
    """V4C_CACHE_DIR: generated kernels and the embedded tiny checkpoint
    (default: $XDG_CACHE_HOME/v4c, else ~/.cache/v4c)."""
    if os.environ.get(CACHE_DIR):
        return Path(os.environ[CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "v4c"


def triton_interpret() -> bool:
    """TRITON_INTERPRET=1 (Triton's own switch): kernels run in Triton's interpreter on the
    CPU, so block sizes and the device tag are chosen for it."""
    return os.environ.get("TRITON_INTERPRET") == "1"
