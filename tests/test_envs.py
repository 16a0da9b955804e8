"""The test session's caches: generated kernels and the tiny checkpoint go to a temporary
folder (tests/conftest.py), in this process and in the CLI processes tests start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from v4c.envs import cache_dir


def test_cache_is_a_temporary_folder(tmp_path_factory):
    assert cache_dir().is_relative_to(tmp_path_factory.getbasetemp())
    assert not cache_dir().is_relative_to(Path.home() / ".cache")


def test_subprocesses_inherit_it():
    code = "from v4c.envs import cache_dir; print(cache_dir())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(cache_dir())
