"""Shared by the e2e tests: one tiny checkpoint per session in a temporary cache (never
~/.cache), and the environment a `v4c` subprocess runs in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from v4c.runtime.checkpoint.tiny_cache import tiny_checkpoint


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """A cache folder holding the tiny checkpoint, made once for the session."""
    root = tmp_path_factory.mktemp("v4c-cache")
    tiny_checkpoint(root, log=lambda _: None)
    return root


@pytest.fixture(scope="session")
def tiny(cache) -> Path:
    return cache / "checkpoints" / "tiny-seed0"


def cli_env(cache: Path, home: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
        "V4C_CACHE_DIR": str(cache),
        "HOME": str(home),  # nothing may land in the real ~/.cache
        "XDG_CACHE_HOME": str(home / ".cache"),
        "V4C_THREADS": "1",
    }
