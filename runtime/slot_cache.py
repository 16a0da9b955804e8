"""Which cache slot holds each offloaded expert a step needs, decided on the device.

A layer's slot cache (`runtime/offload.py`) keeps what it was filled with from one step to
the next: `cached[s]` is the expert slot s holds (-1: none). A step needing a set of
offloaded experts (at most S of them: one round) finds those already cached (no copy: a hit
on the device) and gives each of the others (a miss: copied from host memory) a slot that
holds no expert needed now, the j-th miss the j-th such slot: empty slots first, then those
holding an expert not needed now, each in slot order (so nothing is evicted while a slot is
empty). There are enough: S - (needed experts already cached) >= needed - cached = misses.

Everything is a fixed-shape tensor op (cumulative sums and scatters into one spare entry),
so the decision needs no host sync and a CUDA graph can hold it.

Legend: E experts of the layer, S slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Assignment:
    slot: torch.Tensor  # [E] cache slot of each needed expert, -1 for the others
    source: torch.Tensor  # [S] the expert to copy into each slot, -1: keep what it holds
    copied: torch.Tensor  # [E] bool: needed and not cached (read from host memory)


def assign(cached: torch.Tensor, need: torch.Tensor) -> Assignment:
    """Slots for the experts `need` marks ([E] bool, at most S true), given what `cached`
    ([S + 1], the last entry a spare that scatters of nothing land in) holds; `cached` is
    updated in place to what the slots hold after the copy."""
    experts, slots = need.numel(), cached.numel() - 1
    held, numbers = cached[:slots], torch.arange(slots, device=cached.device)
    where = torch.full((experts + 1,), -1, dtype=torch.long, device=need.device)
    where.scatter_(0, torch.where(held >= 0, held, experts), numbers)
    where = where[:experts]  # [E] the slot holding each expert, -1: not cached
    kept = need & (where >= 0)
    copied = need & ~kept
    empty = held < 0
    stale = ~empty & ~need[held.clamp(min=0)]  # [S] holds an expert not needed now
    rank = torch.where(empty, empty.cumsum(0) - 1, empty.sum() + stale.cumsum(0) - 1)
    nth_free = cached.new_empty(slots + 1)  # empty slots first, then stale ones
    nth_free.scatter_(0, torch.where(empty | stale, rank, slots), numbers)
    nth = (copied.cumsum(0) - 1).clamp(min=0)
    new = nth_free.index_select(0, nth)  # [E] the slot each copied expert goes to
    slot = torch.where(kept, where, torch.where(copied, new, -1))
    ids = torch.arange(experts, device=need.device)
    source = torch.full_like(cached, -1)
    source.scatter_(0, torch.where(copied, new, slots), ids)
    cached.scatter_(0, torch.where(copied, new, slots), ids)
    return Assignment(slot, source[:slots], copied)
