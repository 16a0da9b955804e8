"""Ranks over torch.distributed: one process per rank of a TP × EP grid (NCCL on GPUs, gloo
on CPU), started by torchrun (any number of nodes) or by `spawn` (one machine).

A rank learns its place from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), joins the process group with a timeout on every collective
(`$V4C_DIST_TIMEOUT`, `v4c.envs`), and makes one process group per TP and per EP group
(`Grid.groups`: every rank creates all of them, in the same order, as torch requires).
A rank that fails ends the others with one message, never a hang: under `spawn` the first
failing rank's message is the launcher's error and the other ranks are stopped; under
torchrun, torchrun stops them; a rank that is alive but stalled makes the others' next
collective fail after the timeout (`CommError`).

Only rank 0 samples: `BroadcastSampler` gives every rank rank 0's tokens, so all ranks feed
the same tokens to their next step.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from v4c.errors import V4CError
from v4c.ir.ops.collective import Collective
from v4c.runtime.comm import CommError
from v4c.spec.parallel import Grid

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Place:
    """This process's rank, the world's size and its rank on this node (its GPU)."""

    rank: int
    world: int
    local_rank: int


def place_from_env() -> Place | None:
    """The rank torchrun (or `spawn`) gave this process; None when started alone."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as err:
        raise V4CError(f"torchrun's environment is incomplete or not numbers: {err}") from None
    return Place(rank, world, local)


class TorchComm:
    """The communicator of one rank over torch.distributed (see `runtime.comm`)."""

    def __init__(self, grid: Grid, place: Place, device: torch.device, timeout_s: float):
        self.grid, self.rank, self.device, self.timeout_s = grid, place.rank, device, timeout_s
        self.groups: dict[str, Any] = {"world": None}
        for axis in ("tp", "ep"):
            self.groups[axis] = None  # the whole world, or never used (one rank)
            if 1 < grid.size(axis) < grid.world:
                for ranks in grid.groups(axis):
                    group = dist.new_group(ranks)
                    if place.rank in ranks:
                        self.groups[axis] = group

    def run(self, op: Collective, args: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        index = self.grid.index(op.group, self.rank)
        if op.kind == "shard_start":
            return (torch.tensor([index * op.size], dtype=torch.int64, device=self.device),)
        group, x = self.groups[op.group], args[0].contiguous()
        try:
            if op.kind == "all_reduce":
                y = x.clone()
                dist.all_reduce(y, group=group)
                return (y,)
            if op.kind == "all_gather":
                parts = [torch.empty_like(x) for _ in range(self.grid.size(op.group))]
                dist.all_gather(parts, x, group=group)
                return (torch.cat(parts, dim=op.dim),)
        except (RuntimeError, dist.DistError) as err:
            raise self._failed(op.kind, err) from None
        raise CommError(f"no torch.distributed collective for op {op.kind!r}")

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        try:
            dist.broadcast(tensor, src)
        except (RuntimeError, dist.DistError) as err:
            raise self._failed("broadcast", err) from None

    def _failed(self, what: str, err: Exception) -> CommError:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return CommError(
            f"rank {self.rank}: {what} failed: another rank ended or did not answer within "
            f"{self.timeout_s:g} s ({first[:200]})"
        )


def join(grid: Grid, place: Place, device: str, timeout_s: float) -> TorchComm:
    """Join the process group as `place` of `grid`; `device` cuda takes GPU LOCAL_RANK."""
    if place.world != grid.world:
        raise V4CError(
            f"{place.world} processes for tp={grid.tp} x ep={grid.ep} = {grid.world} ranks: "
            f"start {grid.world} (torchrun --nproc-per-node, or --nnodes x that)"
        )
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        torch.cuda.set_device(place.local_rank)
    where = torch.device("cuda", place.local_rank) if on_gpu else torch.device("cpu")
    if not dist.is_initialized():
        try:
            dist.init_process_group(
                "nccl" if on_gpu else "gloo", rank=place.rank, world_size=place.world,
                timeout=timedelta(seconds=timeout_s),
            )  # fmt: skip
        except (RuntimeError, ValueError, dist.DistError) as err:
            raise CommError(
                f"rank {place.rank}: cannot join the {place.world} ranks at "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within "
                f"{timeout_s:g} s: {str(err).strip()[:200]}"
            ) from None
    return TorchComm(grid, place, where, timeout_s)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class BroadcastSampler:
    """Rank 0 samples, every rank gets its tokens (the ranks' logits are equal, their RNG
    streams need not be)."""

    def __init__(self, sampler, comm) -> None:
        self.sampler, self.comm = sampler, comm

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        if self.comm.rank == 0:
            ids = self.sampler.sample(logits)
        else:
            ids = torch.empty(logits.shape[0], dtype=torch.int64, device=logits.device)
        self.comm.broadcast(ids, 0)
        return ids


# -- one machine: start the ranks ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(world: int, target: Callable[..., Any], args: tuple = ()) -> None:
    """Run `target(*args)` in `world` processes, ranks 0..world-1 of one group on this machine
    (the environment torchrun would set). Returns when all succeed; if one fails, stops the
    others and raises one V4CError with the first failure's message."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    errors = ctx.SimpleQueue()
    port = free_port()
    procs = [
        ctx.Process(target=_rank_entry, args=(rank, world, port, target, args, errors))
        for rank in range(world)
    ]
    for proc in procs:
        proc.start()
    failed = None
    try:
        failed = _wait(procs, errors)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
    if failed is not None:
        raise V4CError(failed)


def _wait(procs, errors) -> str | None:
    """Until all end well (None) or one fails: the first failure's message."""
    from multiprocessing.connection import wait

    running = {proc.sentinel: proc for proc in procs}
    while running:
        for sentinel in wait(list(running)):
            proc = running.pop(sentinel)
            proc.join()
            if proc.exitcode != 0:
                return _first_message(errors, procs.index(proc), proc.exitcode)
    return None


def _first_message(errors, rank: int, code: int) -> str:
    """The earliest message a rank sent (the cause; later ones are other ranks losing it),
    else how `rank` ended."""
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    causes = [m for m in messages if not m[2]] or messages
    if causes:
        rank, text, _ = causes[0]
        return f"rank {rank}: {text}"
    return f"rank {rank} ended with exit code {code} (killed: out of memory?)"


def _rank_entry(rank, world, port, target, args, errors) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    try:
        target(*args)
    except CommError as err:  # a consequence: another rank failed or stalled
        errors.put((rank, str(err), True))
        raise SystemExit(3) from None
    except V4CError as err:
        errors.put((rank, str(err), False))
        raise SystemExit(err.exit_code) from None
    except SystemExit as err:
        if err.code not in (0, None):
            errors.put((rank, f"exited with {err.code}", False))
            raise
    except BaseException as err:  # noqa: BLE001 - reported to the launcher, then exit
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        errors.put((rank, last, False))
        raise SystemExit(1) from None
    leave()  # only after success: a failed rank just ends (a hung peer cannot stall it)
