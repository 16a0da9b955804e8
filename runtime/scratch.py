"""The kernels' scratch in a bound program's arena, past the memory plan's peak.

Split kernels (split-K GEMMs and the shared expert's SwiGLU, split-K hyper-connections,
flash-decoding attention, the indexer's passes) need room the plan's values do not hold:
partial sums that live within one launch, and arrival counters (and the indexer's histograms)
that find a launch's last program and must be zero when the next launch starts. Both are
owned by the program (one arena per entry), sized once at binding from each kernel module at
the entry's limits, so a step allocates nothing and a captured CUDA graph keeps its pointers:

    arena = [ values (memory plan, up to peak) | transient scratch | counters (zeroed once) ]
"""

from __future__ import annotations

from typing import Any

import torch


class KernelScratch:
    """The arena bytes past the memory plan's peak that generated kernels ask for: a kernel
    module may define `scratch_bytes(shapes)` (transient: any launch may overwrite them, one
    launch runs at a time, so all share the same bytes) and `counter_words(shapes)` (int32
    counters, zero before and after each launch: all share one zeroed region that nothing
    else writes); its `run` then takes `scratch=` (uint8) and `counters=` (int32) views."""

    ALIGN = 256

    def __init__(self, peak: int) -> None:
        self.at = self._aligned(peak)  # where the transient scratch starts
        self.asked: dict[int, tuple[int, int]] = {}  # launch -> (scratch bytes, counters)

    @classmethod
    def _aligned(cls, offset: int) -> int:
        """Offsets rounded up to ALIGN bytes: kernels are specialised on 16-byte pointers."""
        return -(-offset // cls.ALIGN) * cls.ALIGN

    def ask(self, i: int, module: Any, shapes: list) -> None:
        nbytes = module.scratch_bytes(shapes) if hasattr(module, "scratch_bytes") else 0
        words = module.counter_words(shapes) if hasattr(module, "counter_words") else 0
        if nbytes or words:
            self.asked[i] = (nbytes, words)

    @property
    def counters_at(self) -> int:
        return self._aligned(self.at + max((b for b, _ in self.asked.values()), default=0))

    @property
    def end(self) -> int:
        return self.counters_at + 4 * max((w for _, w in self.asked.values()), default=0)

    def zero_counters(self, arena: torch.Tensor) -> None:
        arena[self.counters_at :].zero_()

    def views(self, i: int, arena: torch.Tensor) -> dict[str, torch.Tensor]:
        """`run`'s keyword arguments for launch i's scratch (none if it asked for none)."""
        nbytes, words = self.asked.get(i, (0, 0))
        views = {}
        if nbytes:
            views["scratch"] = arena[self.at : self.at + nbytes]
        if words:
            at = self.counters_at
            views["counters"] = arena[at : at + 4 * words].view(torch.int32)
        return views
