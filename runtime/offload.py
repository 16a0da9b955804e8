"""Routed experts under a device budget (`plan.offload`, `v4c.budget`): each offloaded layer's
experts live in two stores, reached through a slot table.

- the device bank: the layer's resident experts (bank entries 0 .. R-1), then a slot cache of
  S entries that the step's offloaded experts are copied into before the expert kernel runs;
- the host store: the offloaded experts (pinned host memory on a GPU; on the CPU the host and
  the device are the same memory, kept apart all the same so the mechanism is the one a GPU
  runs).

Before a layer's grouped SwiGLU, `fetch` decides on the device, from the sort's `offsets`,
which offloaded experts the step picked, numbers them 0, 1, ... (a cumulative sum: no
data-dependent shapes, no host sync), copies them from the host store into the slot cache
(a fixed-size gather of S entries) and writes the slot table: slots[e] = bank entry of
expert e (-1: not in this round). The kernel reads expert e at slots[e]
(grouped_swiglu's `slots`). A step of at most S picks (decode, verify, draft: S is sized
for them, `v4c.budget.slot_cache`) is one round; a prefill step with more distinct offloaded
experts than S runs the kernel in rounds (counted on the host: prefill is never captured).

Counters on the device (read once, after a run): picks served by resident experts, picks of
offloaded experts, and the distinct experts fetched (x their bytes: host-link bytes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from v4c.errors import V4CError
from v4c.ir.semantics.quant import QuantWeight

PLANES = ("w1", "w2", "w3")


class OffloadError(V4CError):
    """A plan's expert offload this runtime cannot honour."""


def _planes(w: torch.Tensor | QuantWeight) -> list[torch.Tensor]:
    return [w.data, w.scale] if isinstance(w, QuantWeight) else [w]


def _like(w: torch.Tensor | QuantWeight, planes: list[torch.Tensor]):
    return QuantWeight(*planes, w.format) if isinstance(w, QuantWeight) else planes[0]


class ExpertStore:
    """One layer's routed experts: `bank` (device: resident, then the slot cache), `host`."""

    def __init__(
        self,
        weights: dict[str, torch.Tensor | QuantWeight],
        resident: list[int],
        cache: int,
        device: torch.device,
    ) -> None:
        if device.type != "cpu":
            raise OffloadError(
                "expert offload runs on the CPU for now: the GPU copy from pinned host memory "
                "into the slot cache is not built yet; compile without a --device-gb budget "
                "that offloads experts"
            )
        experts = _planes(weights["w1"])[0].shape[0]
        offloaded = [e for e in range(experts) if e not in set(resident)]
        self.experts, self.held, self.cache = experts, len(resident), cache
        keep, away = torch.tensor(resident, dtype=torch.long), torch.tensor(offloaded)
        self.bank, self.host = {}, {}
        for name in PLANES:
            w = weights[name]
            planes = _planes(w)
            bank = [
                torch.cat((p.index_select(0, keep), p.new_zeros((cache, *p.shape[1:]))))
                for p in planes
            ]
            self.bank[name] = _like(w, [b.to(device) for b in bank])
            self.host[name] = [p.index_select(0, away).contiguous() for p in planes]
        self.expert_bytes = sum(
            p[0].numel() * p.element_size() for name in PLANES for p in self.host[name]
        ) if offloaded else 0  # fmt: skip
        place = torch.full((experts,), -1, dtype=torch.long)
        place[keep] = torch.arange(len(resident))
        where = torch.full((experts,), -1, dtype=torch.long)
        where[away] = torch.arange(len(offloaded))
        self.resident_slot, self.host_index = place.to(device), where.to(device)
        self.offloaded = self.host_index >= 0
        self.counts = torch.zeros(3, dtype=torch.long, device=device)  # hits, misses, fetched
        self._dump = torch.empty(cache + 1, dtype=torch.long, device=device)

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
        """Copy round `round`'s offloaded experts into the slot cache -> the slot table [E]."""
        counts = offsets[1 : self.experts + 1] - offsets[: self.experts]
        need = (counts > 0) & self.offloaded
        rank = need.cumsum(0) - 1 - round * self.cache  # the cache slot of each needed expert
        now = need & (rank >= 0) & (rank < self.cache)
        if round == 0:
            hits = (counts * ~self.offloaded).sum()
            self.counts += torch.stack((hits, (counts * self.offloaded).sum(), need.sum()))
            first = torch.where(self.offloaded, -1, self.resident_slot)
        else:
            first = torch.full_like(self.resident_slot, -1)
        slots = torch.where(now, self.held + rank, first)
        source = self._dump.zero_()
        source.scatter_(0, torch.where(now, rank, self.cache), self.host_index.clamp(min=0))
        take = source[: self.cache].cpu()  # on the CPU: the same memory, no transfer
        for name in PLANES:
            for bank, host in zip(_planes(self.bank[name]), self.host[name]):
                bank[self.held :].copy_(host.index_select(0, take))
        return slots


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
