"""Ranks over torch.distributed: one process per rank of a TP × EP grid (NCCL on GPUs, gloo
on CPU), started by torchrun (any number of nodes) or by `spawn` (one machine).

A rank learns its place from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), joins the process group with a timeout on every collective
(`$V4C_DIST_TIMEOUT`, `v4c.envs`), and makes one process group per TP and per EP group
(`Grid.groups`: every rank creates all of them, in the same order, as torch requires).
A rank that fails ends the others with one message, never a hang: under `runtime.launch`
the first failing rank's message is the launcher's error and the other ranks are stopped;
under torchrun, torchrun stops them; a rank that ended fails the others' next collective at
once, and one that is alive but stalled fails it after the timeout (`CommError`).

Only rank 0 samples: `BroadcastSampler` gives every rank rank 0's tokens, so all ranks feed
the same tokens to their next step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from v4c.errors import V4CError
from v4c.ir.ops.collective import Collective
from v4c.errors import CommError
from v4c.runtime.launch import Place
from v4c.spec.parallel import Grid


class TorchComm:
    """The communicator of one rank over torch.distributed (see `runtime.comm`). The grid's
    ranks are the processes `ranks` (default: all of them, in order), so several grids may
    share one torch.distributed world; every process of the world must make every grid's
    communicator, in the same order (torch's rule for new groups), and a process outside
    `ranks` gets one it does not use (`rank` -1). Each group times out after `timeout_s`."""

    def __init__(
        self,
        grid: Grid,
        place: Place,
        device: torch.device,
        timeout_s: float,
        ranks: Sequence[int] | None = None,
    ) -> None:
        ranks = list(range(place.world) if ranks is None else ranks)
        self.grid, self.device, self.timeout_s = grid, device, timeout_s
        self.ranks = ranks
        self.rank = ranks.index(place.rank) if place.rank in ranks else -1
        timeout = timedelta(seconds=timeout_s)
        self.groups: dict[str, Any] = {}
        for axis in ("world", "tp", "ep"):
            for members in grid.groups(axis):
                group = dist.new_group([ranks[r] for r in members], timeout=timeout)
                if self.rank in members:
                    self.groups[axis] = group

    def run(self, op: Collective, args: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        index = self.grid.index(op.group, self.rank)
        if op.kind == "shard_start":  # a fill, no host copy: a captured step may hold it
            return (torch.full((1,), index * op.size, dtype=torch.int64, device=self.device),)
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
            dist.broadcast(tensor, self.ranks[src], group=self.groups["world"])
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
        gpus = torch.cuda.device_count()
        if place.local_rank >= gpus:
            raise V4CError(
                f"rank {place.rank}: its GPU is cuda:{place.local_rank}, this node has {gpus}: "
                "start at most that many ranks per node (--nproc-per-node)"
            )
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
