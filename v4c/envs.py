"""Every environment variable v4c reads, in one place, with its default."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """V4C_CACHE_DIR: generated kernels and the embedded tiny checkpoint
    (default: $XDG_CACHE_HOME/v4c, else ~/.cache/v4c)."""
    if os.environ.get("V4C_CACHE_DIR"):
        return Path(os.environ["V4C_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "v4c"
