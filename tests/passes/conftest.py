"""Pass tests run the tiny model's graph through the reference executor before and after
a pass on the same random weights and inputs, and compare every output."""

from __future__ import annotations

import pytest
import torch

from v4c.ir.build import build
from v4c.passes.base import CompileOptions, PassContext
from v4c.passes.manager import run_pipeline
from v4c.passes.pipeline import DEFAULT_PIPELINE
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.runtime.reference import ReferenceExecutor
from v4c.spec import load_spec

RTOL = 1e-5  # fp32: max |before - after| / max |before|
# every output at every token, so the passes are checked on the whole model, MTP included
FULL = CompileOptions(logits="all")


@pytest.fixture(scope="session")
def tiny():
    return load_spec("tiny")


@pytest.fixture(scope="session")
def tiny_weights(tiny):
    return random_weights(tiny, seed=1)


def graph_before(spec, name: str):
    """The tiny graph after every default pass that comes before `name`."""
    graph = build(spec)
    prefix = DEFAULT_PIPELINE[: DEFAULT_PIPELINE.index(name)]
    run_pipeline(graph, PassContext(spec, FULL), prefix)
    return graph


def steps(seed: int = 0):
    """Prefill 20 tokens in 2 rows, decode one, prefill 5 more after them; step rows 0, 1 are
    cache rows 1, 0 (the passes must carry `slots` to every op that touches a cache)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 129280, (2, 27), generator=gen)
    out = []
    for lo, hi in ((0, 20), (20, 21), (21, 26)):
        positions = torch.arange(lo, hi).expand(2, -1).contiguous()
        out.append(
            {
                "ids": ids[:, lo:hi],
                "positions": positions,
                "slots": torch.tensor([1, 0]),
                "mtp_ids": ids[:, lo + 1 : hi + 1],
                "hidden": torch.randn(2, hi - lo, 4, 256, generator=gen),  # the MTP's streams
            }
        )
    return out


def run_steps(graph, weights) -> list[dict[str, torch.Tensor]]:
    executor = ReferenceExecutor(graph, weights)
    state = executor.new_state(batch=2, max_seq=64)
    return [executor.run(step, state) for step in steps()]


def assert_same_outputs(before, after) -> None:
    for b, a in zip(before, after, strict=True):
        assert b.keys() == a.keys()
        for key in b:
            scale = b[key].abs().max().item()
            err = (a[key] - b[key]).abs().max().item()
            assert err <= RTOL * scale, f"{key}: max abs diff {err:.3g} > {RTOL} x {scale:.3g}"
