"""The kernels' scratch is the bound program's: views of its one arena past the memory plan's
peak (runtime/scratch.py), the same for every step, with a counter region zeroed once that
the counting kernels leave at zero; no call allocates its own."""

from __future__ import annotations

from dataclasses import replace

import torch

from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.runtime.engine import Engine
from v4c.runtime.scratch import KernelScratch
from v4c.spec import load_spec


class Recording:
    """A loaded kernel module whose `run` records the scratch it is handed (and computes
    nothing: this test is about where the bytes are, the kernels' own tests about values)."""

    def __init__(self, module, seen: list) -> None:
        self.module, self.seen = module, seen

    def run(self, *args, out=None, **scratch):
        self.seen.append((self.module.__name__, scratch))
        return out


def test_split_kernels_get_views_of_the_arena(tmp_path):
    spec = load_spec("tiny")
    options = CompileOptions(max_batch=2, max_seq=160, weights="bf16", dtype="fp32")
    plan = compile_spec(spec, options).plan
    plan = replace(plan, entries={"decode": plan.entries["decode"]})
    engine = Engine(plan, random_weights(spec, seed=0), dtype=torch.float32, backend="triton",
                    kernel_root=tmp_path / "cache")  # fmt: skip
    program = engine.programs["decode"]
    asked = program.scratch.asked
    counting = {program.entry.launches[i].op for i, (_, words) in asked.items() if words}
    kinds = {"linear", "merged_linear", "hc_pre_norm", "swiglu", "indexer_topk"}
    assert kinds <= counting, counting
    seen: list = []
    program.kernels = {i: Recording(m, seen) for i, m in program.kernels.items()}
    arena = program.arena
    start, end = arena.data_ptr(), arena.data_ptr() + arena.numel()
    counters_at = start + program.scratch.counters_at
    assert program.scratch.counters_at >= program.entry.peak_bytes
    assert not arena[program.scratch.counters_at :].any()  # zeroed once, at binding
    for batch in (1, 2):
        seen.clear()
        program.bind(batch, 1).run()
        handed = [s for _, s in seen if s]
        assert len(handed) == len(asked)
        for views in handed:
            if "counters" in views:
                counters = views["counters"]
                assert counters.dtype == torch.int32 and counters.data_ptr() == counters_at
            if "scratch" in views:
                at = views["scratch"].data_ptr()
                assert at == start + program.scratch.at >= start + program.entry.peak_bytes
                # aligned as the arena is (CUDA's allocator: 256 B, the CPU's 64 B): the offset
                # is the program's part; kernels are specialised on 16-byte pointers
                assert (at - start) % 256 == 0
                assert at + views["scratch"].numel() <= counters_at
            for view in views.values():
                assert view.untyped_storage().data_ptr() == start
                assert view.data_ptr() + view.nbytes <= end


def test_transient_scratch_is_shared_and_counters_follow_it():
    class Asks:
        def __init__(self, nbytes, words):
            self.scratch_bytes = lambda shapes: nbytes
            self.counter_words = lambda shapes: words

    scratch = KernelScratch(peak=1000)
    scratch.ask(0, Asks(300, 2), [])
    scratch.ask(1, Asks(100, 7), [])
    scratch.ask(2, object(), [])  # asks for nothing
    assert scratch.at == 1024  # the peak, 256-aligned
    assert scratch.counters_at == 1536 and scratch.end == 1536 + 7 * 4  # 1324 -> 256-aligned
    arena = torch.full((scratch.end,), 9, dtype=torch.uint8)
    scratch.zero_counters(arena)
    views = scratch.views(1, arena)
    assert views["scratch"].data_ptr() == arena.data_ptr() + 1024
    assert views["scratch"].numel() == 100
    assert views["counters"].shape == (7,) and not views["counters"].any()
    assert scratch.views(2, arena) == {} and arena[:1536].eq(9).all()
