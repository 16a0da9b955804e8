"""Shared fixtures. GPU tests are marked `gpu` and skip where CUDA is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.interpreter import skip_repeated_lang_patches
from v4c.envs import CACHE_DIR


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# Without a GPU every Triton kernel runs in the interpreter; this must be decided before
# the first `@triton.jit` is evaluated, so it is set when the test session starts.
if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    skip_repeated_lang_patches()

# The suite runs in one worker per core (pytest-xdist, README): a worker's torch keeps to
# one thread, or two workers' thread pools contend for the cores and a step can take 20x.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
DATA = Path(__file__).resolve().parent / "spec" / "data"


@pytest.fixture(scope="session", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    """Generated kernels and the tiny checkpoint go to a temporary folder for the session,
    never into the user's ~/.cache; CLI subprocesses inherit it through the environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_DIR, str(tmp_path_factory.mktemp("v4c-cache")))
        yield


@pytest.fixture
def kernel_cache(tmp_path):
    """A fresh kernel cache folder for one test."""
    return tmp_path / "kernels"


def pytest_configure(config):
    """pytest-xdist hands out files (--dist loadfile) in the order the items are collected,
    not re-sorted by their number of tests: see `pytest_collection_modifyitems`."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)  # after `-m` deselected
def pytest_collection_modifyitems(config, items):
    """GPU tests skip without CUDA. The files with the most `slow` tests run first, then the
    rest, most tests first: the workers take the costly files while every file is still
    queued, and the small ones even out the end (xdist's own order, most tests first, put a
    file of one interpreted end-to-end test last, where it alone set the suite's wall time)."""
    if not _has_cuda():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    slow, count = {}, {}
    for item in items:
        path = item.nodeid.split("::")[0]
        count[path] = count.get(path, 0) + 1
        runs = "slow" in item.keywords and not item.get_closest_marker("skip")
        slow[path] = slow.get(path, 0) + runs
    order = {path: (-slow[path], -count[path]) for path in count}
    items.sort(key=lambda item: order[item.nodeid.split("::")[0]])
