"""What the spawned ranks of tests/runtime/test_distributed.py run (a module of its own, so
a `spawn` child imports it without the test module's fixtures).

`rank_runs` is one process of a 4-process gloo world: it runs tp=2 x ep=2 on all four, then
tp=2 on processes 0-1 and ep=2 on processes 2-3 at the same time, each through the engine
on its pieces of the checkpoint, and saves what the grid's rank 0 saw; last, processes 0-1
check that a collective whose peer never comes fails after its group's timeout.
The model is `specs/variants/tiny-8k-vocab.yaml` (tiny with a small vocabulary: its
lm_head would otherwise be most of every rank's decode step).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from v4c.ir.ops.collective import AllReduce
from v4c.ir.plan import Plan
from v4c.passes.options import CompileOptions
from v4c.runtime.checkpoint import load_checkpoint
from v4c.runtime.comm import CommError
from v4c.runtime.distributed import BroadcastSampler, TorchComm, join
from v4c.runtime.launch import place_from_env
from v4c.runtime.engine import Engine
from v4c.runtime.checkpoint.pieces import rank_ranges
from v4c.runtime.sampler import Sampler
from v4c.spec import load_spec
from v4c.spec.parallel import Grid

SPEC = "variants/tiny-8k-vocab"
PROMPTS = [list(range(1000, 1140)), list(range(5, 42))]  # past the window, past 4 and 128
DECODE = 30
CONFIGS = [((2, 2), [0, 1, 2, 3]), ((2, 1), [0, 1]), ((1, 2), [2, 3])]
TIMEOUT_S = 1.5  # the timeout check's group


def options(tp: int = 1, ep: int = 1) -> CompileOptions:
    return CompileOptions(
        max_batch=2, max_tokens=160, max_seq=256, dtype="fp32", weights="bf16", tp=tp, ep=ep
    )


def generate(engine: Engine, sampler) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [1 + DECODE, 2, V], greedy tokens [1 + DECODE, 2]) of both prompts."""
    engine.reset(2)
    logits = [engine.forward(PROMPTS)]
    tokens = [sampler.sample(logits[-1])]
    for _ in range(DECODE):
        logits.append(engine.forward([[int(t)] for t in tokens[-1]]))
        tokens.append(sampler.sample(logits[-1]))
    return torch.stack(logits), torch.stack(tokens)


def plan_file(out: Path, grid: tuple[int, int]) -> Path:
    return out / f"tp{grid[0]}_ep{grid[1]}.json"


def read_plan(out: Path, grid: tuple[int, int]) -> Plan:
    """A plan the test wrote (a spawned process gets paths, not objects: a large argument
    would make each process start wait for the one before it)."""
    return Plan.from_json(plan_file(out, grid).read_text())


def rank_engine(folder: Path, plan: Plan, comm) -> Engine:
    _, weights = load_checkpoint(
        folder, load_spec(SPEC), dtype=torch.float32, progress=False, names=set(plan.params),
        pieces=rank_ranges(plan.params, comm.grid, comm.rank),
    )  # fmt: skip
    return Engine(plan, weights, dtype=torch.float32, comm=comm)


def rank_runs(folder: Path, out: Path) -> None:
    """`out` holds the plans (`tp{tp}_ep{ep}.json`, compiled once by the test) and gets
    the results."""
    torch.set_num_threads(1)
    place = place_from_env()
    plans = {grid: read_plan(out, grid) for grid, _ in CONFIGS}
    world = join(Grid(2, 2), place, "cpu", timeout_s=120)
    comms = [world] + [
        TorchComm(Grid(*grid), place, world.device, 120, ranks) for grid, ranks in CONFIGS[1:]
    ]
    stalled = TorchComm(Grid(2, 1), place, world.device, TIMEOUT_S, [0, 1])
    for (grid, _), comm in zip(CONFIGS, comms):
        if comm.rank < 0:
            continue
        engine = rank_engine(folder, plans[grid], comm)
        logits, tokens = generate(engine, BroadcastSampler(Sampler(), comm))
        if comm.rank == 0:
            torch.save(
                {"logits": logits, "tokens": tokens}, plan_file(out, grid).with_suffix(".pt")
            )
    if stalled.rank == 0:  # rank 1 of this group never joins the all_reduce
        start = time.monotonic()
        try:
            stalled.run(AllReduce("tp"), [torch.ones(4)])
            message = "the all_reduce completed"
        except CommError as err:
            message = str(err)
        waited = time.monotonic() - start
        torch.save({"message": message, "waited": waited}, out / "timeout.pt")
    elif stalled.rank == 1:  # alive, but elsewhere (an ended rank fails it at once instead)
        deadline = time.monotonic() + 60
        while not (out / "timeout.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
