"""Undoing tokens a speculative step fed but did not keep: every cache as if they were never fed.

Why snapshot-and-restore works here: each cache a token writes is a set of slots indexed by
its position alone (the layouts their semantics document), so a step over positions
[start, start + T) writes exactly the slots those positions map to, and nothing else:
- a ring of P slots (the sliding window [N, W, d], the compressor's running state
  [N, coff*m, coff*c]): position p writes slot p % P, every time;
- compressed entries [N, S/m, c] (the compressor's and the indexer's): position p writes entry
  p // m, only when it closes the window (p % m == m - 1).
So before a step `save` gathers those slots of each row (T * rows small slices, not the
caches), and after it `restore` writes back the ones the rejected positions (the row's
[start + keep, start + T)) wrote. A ring slot then holds again the position P earlier, which
the window of the kept tokens still reads; an entry holds what it held before it was closed.

Every gather and scatter is one indexed op per cache with a fixed shape (rows that keep
different numbers of tokens differ only in a mask), so nothing is read on the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from v4c.errors import V4CError


@dataclass(frozen=True)
class _Layout:
    """How positions map to the slots of one cache: a ring of `period` slots, or entries
    of `ratio` positions each (written by the last)."""

    period: int = 0
    ratio: int = 0


def layout_of(shape: list) -> _Layout:
    """The layout of a cache from its plan shape [N, slots, ...]: an int slot count is a
    ring, "S/m" entries of m positions."""
    slots = shape[1]
    if isinstance(slots, int):
        return _Layout(period=slots)
    if isinstance(slots, str) and slots.startswith("S/"):
        return _Layout(ratio=int(slots[2:]))
    raise V4CError(f"a cache of shape {shape} has no known position layout to undo")


@dataclass
class Snapshot:
    """What a step over positions starts[b] + [0, T) of cache rows `rows` overwrites."""

    rows: torch.Tensor  # [b]
    starts: torch.Tensor  # [b]
    tokens: int
    index: dict[str, torch.Tensor]  # cache key -> [b, T] slot of each position
    saved: dict[str, torch.Tensor]  # cache key -> [b, T, ...] the slots before the step


class Rollback:
    def __init__(self, caches: Mapping[str, torch.Tensor], shapes: Mapping[str, list]) -> None:
        """`caches`: the tensors a step writes, by key; `shapes`: their plan shapes."""
        self.caches = {k: v for k, v in caches.items() if v.shape[1]}  # (empty: never written)
        self.layouts = {key: layout_of(shapes[key]) for key in self.caches}

    def check(self, tokens: int) -> None:
        """A ring must hold a step's tokens in distinct slots for them to be undone."""
        for key, layout in self.layouts.items():
            if layout.period and tokens > layout.period:
                raise V4CError(
                    f"{key}: a step of {tokens} tokens overwrites its own slots in a ring of "
                    f"{layout.period}; draft fewer tokens"
                )

    def save(self, rows: torch.Tensor, starts: torch.Tensor, tokens: int) -> Snapshot:
        device = rows.device
        positions = starts[:, None] + torch.arange(tokens, device=device)  # [b, T]
        index, saved = {}, {}
        for key, cache in self.caches.items():
            slot = self._slots(self.layouts[key], positions, cache.shape[1])
            index[key] = slot
            saved[key] = cache[rows[:, None], slot]
        return Snapshot(rows, starts, tokens, index, saved)

    def restore(self, snap: Snapshot, keep: torch.Tensor) -> None:
        """Undo, per row, the positions from starts[b] + keep[b] on (keep [b], 0..T)."""
        step = torch.arange(snap.tokens, device=keep.device)
        for key, cache in self.caches.items():
            layout, slot = self.layouts[key], snap.index[key]
            if layout.period:  # slot j was written by the step's token j
                writer = step.expand_as(slot)
            else:  # entry e is written by position (e+1)*m - 1, if the step holds it
                writer = (slot + 1) * layout.ratio - 1 - snap.starts[:, None]
            undo = (writer >= keep[:, None]) & (writer < snap.tokens)  # [b, T]
            undo = undo.view(*undo.shape, *([1] * (cache.dim() - 2)))
            rows = snap.rows[:, None]
            cache[rows, slot] = torch.where(undo, snap.saved[key], cache[rows, slot])

    @staticmethod
    def _slots(layout: _Layout, positions: torch.Tensor, size: int) -> torch.Tensor:
        if layout.period:
            return positions % layout.period
        # positions of a partial last window map past the cache; they never close an entry
        return (positions // layout.ratio).clamp(max=size - 1)
