"""Every environment variable v4c reads, in one place, with its default."""

from __future__ import annotations

import os
from pathlib import Path

from v4c.errors import V4CError

CACHE_DIR = "V4C_CACHE_DIR"


def cache_dir() -> Path:
    """V4C_CACHE_DIR: generated kernels and the embedded tiny checkpoint
    (default: $XDG_CACHE_HOME/v4c, else ~/.cache/v4c)."""
    if os.environ.get(CACHE_DIR):
        return Path(os.environ[CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "v4c"


def cpu_threads() -> int | None:
    """V4C_THREADS: torch's CPU thread count for `v4c run`/`chat` (unset: one fewer than the
    cores this process may use, at least one)."""
    value = os.environ.get("V4C_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise V4CError(f"V4C_THREADS: expected a positive integer, got {value!r}")
    return int(value)


def triton_interpret() -> bool:
    """TRITON_INTERPRET=1 (Triton's own switch): kernels run in Triton's interpreter on the
    CPU, so block sizes and the device tag are chosen for it."""
    return os.environ.get("TRITON_INTERPRET") == "1"


# V4C_API_KEY: the key `v4c serve` requires (as --api-key; the option wins), so that it
# need not appear in the process list
API_KEY = "V4C_API_KEY"

DIST_TIMEOUT = "V4C_DIST_TIMEOUT"


def dist_timeout() -> float:
    """V4C_DIST_TIMEOUT: seconds a rank waits in a collective (or to join the others)
    before it gives up with an error, so a failed or stalled rank never hangs the rest
    (default 1800: the first collective waits for the slowest rank to read its weights)."""
    value = os.environ.get(DIST_TIMEOUT, "").strip()
    if not value:
        return 1800.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise V4CError(f"{DIST_TIMEOUT}: expected a positive number of seconds, got {value!r}")
    return seconds


TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_place() -> tuple[int, int, int] | None:
    """RANK, WORLD_SIZE, LOCAL_RANK (default RANK) as torchrun sets them for each process it
    starts (and `runtime.launch.spawn` does); None when WORLD_SIZE is unset (one process).
    torch.distributed reads MASTER_ADDR and MASTER_PORT itself."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return rank, world, int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as err:
        raise V4CError(f"torchrun's environment is incomplete or not numbers: {err}") from None
