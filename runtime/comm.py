"""Communicators: how a rank's executor runs the collective ops of a sharded graph.

A communicator knows the grid, its rank and its device, and runs a collective op on this
rank's operands (`run`), and broadcasts a tensor from one rank (the sampled tokens). Two
kinds: `TorchComm` (`runtime/distributed.py`) calls torch.distributed, one process per
rank; `LocalGroup` runs every rank of a grid as a thread of one process and computes each
collective with the op's own reference semantics (`Collective.combine`), which is how the
`shard` pass and the engine are tested against one process without starting any.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import torch

from v4c.errors import CommError
from v4c.ir.ops.collective import Collective
from v4c.spec.parallel import Grid

T = TypeVar("T")


class Communicator(Protocol):
    grid: Grid
    rank: int
    device: torch.device

    def run(self, op: Collective, args: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """This rank's results of `op` on this rank's operands `args`."""

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        """Every rank's `tensor` becomes rank `src`'s, in place."""


class LocalGroup:
    """Every rank of `grid` as a thread of this process; `run(fn)` calls `fn(comm)` on each
    and returns the results in rank order. A collective waits for all ranks (a barrier with
    `timeout`), so a rank that fails or stalls ends the others with a CommError."""

    def __init__(self, grid: Grid, *, timeout: float = 120.0, device: str = "cpu") -> None:
        self.grid, self.device, self.timeout = grid, torch.device(device), timeout
        self.barrier = threading.Barrier(grid.world, timeout=timeout)
        self.slots: list[Any] = [None] * grid.world

    def run(self, fn: Callable[[LocalComm], T]) -> list[T]:
        results: list[Any] = [None] * self.grid.world
        errors: list[tuple[int, BaseException]] = []

        def rank_main(rank: int) -> None:
            try:
                results[rank] = fn(LocalComm(self, rank))
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append((rank, err))
                self.barrier.abort()

        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(self.grid.world)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first = [(r, e) for r, e in errors if not isinstance(e, CommError)] or errors
        if first:
            rank, err = min(first, key=lambda re: re[0])
            raise err
        return results

    def exchange(self, rank: int, value: Any, read: Callable[[list[Any]], T]) -> T:
        """`read(every rank's value)`, once all have given theirs; no rank goes on (and
        overwrites what it gave) before every rank has read."""
        self.slots[rank] = value
        self._wait()
        try:
            return read(list(self.slots))
        finally:
            self._wait()

    def _wait(self) -> None:
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            raise CommError(
                "a collective did not complete: another rank failed or did not reach it "
                f"within {self.timeout:g} s"
            ) from None


class LocalComm:
    """One rank of a `LocalGroup`."""

    def __init__(self, group: LocalGroup, rank: int) -> None:
        self.group, self.rank = group, rank
        self.grid, self.device = group.grid, group.device

    def run(self, op: Collective, args: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        index = self.grid.index(op.group, self.rank)
        members = self.grid.group(op.group, self.rank)

        def read(every: list) -> tuple[torch.Tensor, ...]:
            results = op.combine([every[r] for r in members], index)
            return tuple(t.to(self.device) for t in results)

        if not op.operand_roles():  # needs no other rank (shard_start)
            return read([[] for _ in range(self.grid.world)])
        return self.group.exchange(self.rank, list(args), read)

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        tensor.copy_(self.group.exchange(self.rank, tensor, lambda every: every[src].clone()))
