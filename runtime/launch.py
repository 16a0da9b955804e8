"""Start the ranks of a multi-rank run on this machine, as torchrun would, and end them
together: `spawn(world, target, args)` runs `target(*args)` in `world` processes with the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

If any rank fails, the others are stopped at once and `spawn` raises one V4CError with the
cause: the first message of a rank that failed on its own, not those of the ranks that then
lost it in a collective (`CommError`), or how a rank died without one (killed: out of
memory). A rank that does not end when stopped (it stalls in a collective, or ignores
SIGTERM) is killed after `STOP_GRACE_S`. Ctrl-C reaches every rank (one process group):
the launcher gives rank 0 `STOP_GRACE_S` to end its reply and print its last line, then
stops the others and ends as interrupted. This module imports no torch: a process starts
with what its target needs.
Arguments travel to each process by pickle before it starts: keep them small (paths).
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from v4c.envs import TORCHRUN, torchrun_place
from v4c.errors import CommError, V4CError

STOP_GRACE_S = 10.0  # seconds a rank has to end after SIGTERM (or rank 0 after Ctrl-C)


@dataclass(frozen=True)
class Place:
    """This process's rank, the world's size and its rank on this node (its GPU)."""

    rank: int
    world: int
    local_rank: int


def place_from_env() -> Place | None:
    """The rank torchrun (or `spawn`) gave this process; None when started alone."""
    place = torchrun_place()
    return None if place is None else Place(*place)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(world: int, target: Callable[..., Any], args: tuple = ()) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    messages = ctx.SimpleQueue()
    port = free_port()
    procs = [
        ctx.Process(target=_rank_entry, args=(rank, world, port, target, args, messages))
        for rank in range(world)
    ]
    for proc in procs:
        proc.start()
    try:
        failed = _wait(procs, messages)
    except KeyboardInterrupt:
        procs[0].join(STOP_GRACE_S)  # rank 0 stops its reply and says so
        raise
    finally:
        _stop(procs)
    if failed is not None:
        raise V4CError(failed)


def _stop(procs) -> None:
    """End every rank still running: SIGTERM, then SIGKILL for one that has not ended
    within `STOP_GRACE_S` (a rank stalled where SIGTERM cannot reach it)."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(STOP_GRACE_S)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _wait(procs, messages) -> str | None:
    """Until all end well (None) or one fails: the message of the failure."""
    from multiprocessing.connection import wait

    running = {proc.sentinel: proc for proc in procs}
    while running:
        for sentinel in wait(list(running)):
            proc = running.pop(sentinel)
            proc.join()
            if proc.exitcode != 0:
                return _cause(messages, procs.index(proc), proc.exitcode)
    return None


def _cause(messages, rank: int, code: int) -> str:
    """The first message of a rank that failed on its own (the others lost it), else any
    message, else how `rank` ended."""
    sent = []
    while not messages.empty():
        sent.append(messages.get())
    causes = [m for m in sent if not m[2]] or sent
    if causes:
        first, text, _ = causes[0]
        # a collective's own error names its rank already
        return text if text.startswith(f"rank {first}: ") else f"rank {first}: {text}"
    return f"rank {rank} ended with exit code {code} (killed: out of memory?)"


def _rank_entry(rank, world, port, target, args, messages) -> None:
    values = (rank, world, rank, "127.0.0.1", port)  # one machine: local rank = rank
    os.environ.update({key: str(value) for key, value in zip(TORCHRUN, values)})
    try:
        target(*args)
    except CommError as err:  # a consequence: another rank failed or stalled
        messages.put((rank, str(err), True))
        raise SystemExit(3) from None
    except V4CError as err:
        messages.put((rank, str(err), False))
        raise SystemExit(err.exit_code) from None
    except SystemExit as err:
        if err.code not in (0, None):
            messages.put((rank, f"exited with {err.code}", False))
            raise
    except BaseException as err:  # noqa: BLE001 - reported to the launcher, then exit
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        messages.put((rank, last, False))
        raise SystemExit(1) from None
    if "torch.distributed" in sys.modules:  # after success only: a failed rank just ends
        from v4c.runtime.distributed import leave

        leave()
