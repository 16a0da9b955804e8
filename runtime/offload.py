"""Routed experts under a device budget (`plan.offload`, `v4c.budget`): each offloaded layer's
experts live in two stores, reached through a slot table.

- the device bank: the layer's resident experts (bank entries 0 .. R-1), then a slot cache of
  S entries that the step's offloaded experts are copied into before the expert kernel runs;
- the host store: the offloaded experts (pinned host memory on a GPU; on the CPU the host and
  the device are the same memory, kept apart all the same so the mechanism is the one a GPU
  runs).

Before a layer's grouped SwiGLU, `fetch` decides on the device, from the sort's `offsets`,
which offloaded experts the step picked and numbers them 0, 1, ... (a cumulative sum: no
data-dependent shapes, no host sync); `runtime/slot_cache.py` finds those the slot cache
still holds from earlier steps (hits on the device) and gives the others slots; the copy
kernel reads just those from the host store in place (device-mapped pinned memory) into
their slots; the slot table then says where each expert is: slots[e] = bank entry of expert
e (-1: not in this round). The kernel reads expert e at slots[e] (grouped_swiglu's `slots`).
A step of at most S picks (a one-token step, the one a CUDA graph holds: S is sized for it,
`v4c.budget.slot_cache`) is one round; a step of more tokens (prefill, verify) with more
distinct offloaded experts than S runs the kernel in rounds (counted on the host: those
steps are never captured). `prefetch` copies a predicted set ahead of the fetch
(`runtime/prefetch.py`: the next layer's router on this layer's input).

Counters on the device (read once, after a run): picks served by experts on the device
(resident or cached, prefetched included), picks of experts copied at their fetch, and the
experts copied, prefetches included (x their bytes: host-link bytes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from v4c.codegen.kernels.expert_copy import ALIGN_BYTES, fill_slots
from v4c.envs import triton_interpret
from v4c.errors import V4CError
from v4c.ir.semantics.quant import QuantWeight
from v4c.runtime.slot_cache import assign

PLANES = ("w1", "w2", "w3")
# bytes a copy program moves (at most), bytes a step of it: 16 B a thread, 4 warps, 2 steps
CHUNK, BLOCK = 1 << 16, 1 << 12


class OffloadError(V4CError):
    """A plan's expert offload this runtime cannot honour."""


def _planes(w: torch.Tensor | QuantWeight) -> list[torch.Tensor]:
    return [w.data, w.scale] if isinstance(w, QuantWeight) else [w]


def _like(w: torch.Tensor | QuantWeight, planes: list[torch.Tensor]):
    return QuantWeight(*planes, w.format) if isinstance(w, QuantWeight) else planes[0]


class ExpertStore:
    """One layer's routed experts: `bank` (device: resident, then the slot cache), `host`.

    `kernel`: fill the slot cache with the copy kernel (`codegen/kernels/expert_copy.py`),
    which reads the host store in place; the default on a GPU and under the Triton
    interpreter (the same kernel on CPU tensors). Without it (CPU, torch backend) the slots
    are filled by a gather, the reference of the copy."""

    def __init__(
        self,
        weights: dict[str, torch.Tensor | QuantWeight],
        resident: list[int],
        cache: int,
        device: torch.device,
        kernel: bool | None = None,
    ) -> None:
        experts = _planes(weights["w1"])[0].shape[0]
        offloaded = [e for e in range(experts) if e not in set(resident)]
        self.experts, self.held, self.cache = experts, len(resident), cache
        self.device = device
        self.kernel = device.type == "cuda" or triton_interpret() if kernel is None else kernel
        keep, away = torch.tensor(resident, dtype=torch.long), torch.tensor(offloaded)
        self.bank, self.host = {}, {}
        for name in PLANES:
            w = weights[name]
            planes = _planes(w)
            at = planes[0].device  # where the weights were read: any device
            bank = [
                torch.cat((p.index_select(0, keep.to(at)), p.new_zeros((cache, *p.shape[1:]))))
                for p in planes
            ]
            self.bank[name] = _like(w, [b.to(device) for b in bank])
            self.host[name] = [_host(p, away.to(at), device) for p in planes]
        self.expert_bytes = sum(
            p[0].numel() * p.element_size() for name in PLANES for p in self.host[name]
        ) if offloaded else 0  # fmt: skip
        place = torch.full((experts,), -1, dtype=torch.long)
        place[keep] = torch.arange(len(resident))
        where = torch.full((experts,), -1, dtype=torch.long)
        where[away] = torch.arange(len(offloaded))
        self.resident_slot, self.host_index = place.to(device), where.to(device)
        self.offloaded = self.host_index >= 0
        # hits (picks served on the device), misses (picks of experts copied), experts copied
        self.counts = torch.zeros(3, dtype=torch.long, device=device)
        self.cached = torch.full((cache + 1,), -1, dtype=torch.long, device=device)
        self.table = self._table() if self.kernel and offloaded else None
        self.ahead = torch.zeros(experts, dtype=torch.long, device=device)  # predicted picks
        self.pending = None  # the side stream a prefetch runs on until the next fetch

    def prefetch(self) -> None:
        """Copy the offloaded experts `ahead` marks (the first `cache` of them) into the slot
        cache ahead of the fetch that needs them (`runtime/prefetch.py`)."""
        now = (self.ahead > 0) & self.offloaded
        now &= now.cumsum(0) <= self.cache
        got = assign(self.cached, now)
        self.counts[2] += got.copied.sum()
        self._copy(torch.where(got.source >= 0, self.host_index[got.source.clamp(min=0)], -1))

    def _pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(host plane, slot-cache part of the bank plane) of every plane."""
        return [(host, bank[self.held :]) for name in PLANES
                for bank, host in zip(_planes(self.bank[name]), self.host[name])]  # fmt: skip

    def _table(self) -> torch.Tensor:
        """[P, 3] int64 on the device: host address, slot 0's address, bytes an expert."""
        rows = []
        for host, slots in self._pairs():
            size = host[0].numel() * host.element_size()
            row = (_device_address(host, self.device), slots.data_ptr(), size)
            if any(v % ALIGN_BYTES for v in row):
                raise OffloadError(
                    f"expert copy: an expert's plane of {size} bytes at {row[0]:#x} / "
                    f"{row[1]:#x} is not a multiple of {ALIGN_BYTES} bytes"
                )
            rows.append(row)
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def rounds(self, offsets: torch.Tensor, picks: int) -> int:
        """Kernel rounds a step needs: 1 when its picks fit the slot cache (no sync)."""
        if picks <= self.cache:
            return 1
        need = self._need(offsets)
        return max(1, -(-int(need.sum()) // self.cache))

    def _need(self, offsets: torch.Tensor) -> torch.Tensor:
        counts = offsets[1 : self.experts + 1] - offsets[: self.experts]
        return (counts > 0) & self.offloaded

    def fetch(self, offsets: torch.Tensor, round: int) -> torch.Tensor:
        """Make round `round`'s offloaded experts present in the slot cache (copying those it
        does not hold) -> the slot table [E]: bank entry of each expert, -1 outside the round."""
        if self.pending is not None:  # a prefetch on a side stream: joined here
            torch.cuda.current_stream(self.device).wait_stream(self.pending)
            self.pending = None
        counts = offsets[1 : self.experts + 1] - offsets[: self.experts]
        need = (counts > 0) & self.offloaded
        rank = need.cumsum(0) - 1 - round * self.cache  # this round: ranks 0 .. cache - 1
        now = need & (rank >= 0) & (rank < self.cache)
        got = assign(self.cached, now)
        first = torch.where(self.offloaded, -1, self.resident_slot)
        slots = torch.where(now, self.held + got.slot, first if round == 0 else -1)
        missed = (counts * got.copied).sum()
        served = (counts * (now & ~got.copied)).sum()
        if round == 0:
            served = served + (counts * ~self.offloaded).sum()
        self.counts += torch.stack((served, missed, got.copied.sum()))
        source = torch.where(got.source >= 0, self.host_index[got.source.clamp(min=0)], -1)
        self._copy(source)
        return slots

    def _copy(self, source: torch.Tensor) -> None:
        """Slot s of the cache := host expert source[s] (>= 0), on the device."""
        if self.device.type == "cpu" and not bool((source >= 0).any()):
            return  # nothing to copy: on the CPU the look is free (no step is captured there)
        if self.kernel:
            pairs = self._pairs()
            most = max(host[0].numel() * host.element_size() for host, _ in pairs)
            chunk = min(CHUNK, 1 << (most - 1).bit_length())
            grid = (self.cache, len(pairs), -(-most // chunk))
            block = min(BLOCK, chunk)
            fill_slots[grid](source.to(torch.int32), self.table, CHUNK=chunk, BLOCK=block)
            return
        take = source.clamp(min=0).cpu()  # the torch reference: CPU only, the same memory
        keep = (source >= 0).cpu()
        for host, slots in self._pairs():
            mask = keep.view(-1, *[1] * (slots.dim() - 1))
            slots.copy_(torch.where(mask, host.index_select(0, take), slots))


def _host(plane: torch.Tensor, away: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The host store's copy of the experts `away` of a plane (from wherever the weights were
    read): pinned (page-locked, device-mapped) for a GPU, gathered straight into it."""
    pinned = device.type == "cuda"
    out = torch.empty((len(away), *plane.shape[1:]), dtype=plane.dtype, pin_memory=pinned)
    if plane.device.type == "cpu":
        return torch.index_select(plane, 0, away, out=out)
    return out.copy_(plane.index_select(0, away))  # read onto a device: one expert set there


def _device_address(host: torch.Tensor, device: torch.device) -> int:
    """The address a kernel on `device` reads `host` at: under unified addressing (every
    64-bit CUDA platform) pinned host memory is mapped at its host address; on the CPU the
    address is the tensor's own."""
    if device.type == "cuda" and not host.is_pinned():
        raise OffloadError("the host store must be pinned for the device to read it in place")
    return host.data_ptr()


def layer_of(name: str) -> str:
    """The layer prefix of a routed-expert weight (`layers.3`), "" for any other weight."""
    prefix, sep, _ = name.partition(".ffn.experts.{e}.")
    return prefix if sep else ""


def offloaded_call(
    store: ExpertStore, op, args: list, out: torch.Tensor, run: Callable | None = None
) -> Callable[[], None]:
    """The bound call of one offloaded grouped SwiGLU launch (`op`, its bound `args`, its
    result view `out`): the generated kernel's `run` over the bank, or the reference
    semantics without one; rows of experts outside a round are kept from earlier rounds."""
    from v4c.ir.semantics.moe import grouped_swiglu

    x, order, offsets, weights = args[:4]

    def kernel(slots: torch.Tensor) -> torch.Tensor:
        w1, w2, w3 = (store.bank[name] for name in PLANES)
        if run is not None:
            return run(x, order, offsets, weights, w1, w2, w3, out=(out,), slots=slots)[0]
        w1, w2, w3 = (w.dequantize(x.dtype) if isinstance(w, QuantWeight) else w
                      for w in (w1, w2, w3))  # fmt: skip
        y = grouped_swiglu(
            x.flatten(0, -2), order.flatten(), offsets, weights.flatten(0, -2), w1, w2, w3,
            limit=op.limit, act_quant=op.act_quant, slots=slots,
        )  # fmt: skip
        return y.view(out.shape)

    picks = order.numel()
    experts = store.experts

    def call() -> None:
        rounds = store.rounds(offsets, picks)
        for r in range(rounds):
            slots = store.fetch(offsets, r)
            y = kernel(slots)
            if rounds == 1:
                out.copy_(y)
                continue
            rows = torch.arange(picks, device=offsets.device)
            expert = torch.searchsorted(offsets[1:], rows, right=True).clamp(max=experts - 1)
            mine = (slots.index_select(0, expert) >= 0).view(*out.shape[:-1], 1)
            out.copy_(torch.where(mine, y, out))

    return call
