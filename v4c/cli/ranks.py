"""`v4c run` over several ranks: which TP × EP grid, and this process's part in it.

Three ways a run starts:
- alone with tp = ep = 1: one process, as before;
- alone with `--tp N` / `--ep M` (or a plan or spec that says so): this process is the
  launcher; it starts N×M rank processes on this machine (`runtime.launch.spawn`),
  each running the same command as a rank, and reports the first failure as its error;
- under torchrun (RANK/WORLD_SIZE in the environment): this process is one rank; without
  `--tp/--ep` the grid is all tensor-parallel (tp = WORLD_SIZE / ep).
Only rank 0 speaks: the other ranks' output is discarded (their errors still end them and,
through torchrun or the launcher, everyone).
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Annotated, Iterator

import typer

from v4c.errors import V4CError

Tp = Annotated[
    int | None,
    typer.Option(
        "--tp", min=1, help="Tensor-parallel ranks (attention heads, expert slices); starts "
        "the ranks on this machine, or say what torchrun started. Default: the plan's or "
        "spec's `parallel`, else 1 (under torchrun: all the ranks).",
    ),
]  # fmt: skip
Ep = Annotated[
    int | None,
    typer.Option("--ep", min=1, help="Expert-parallel ranks (routed experts). Default as --tp."),
]


def resolve_grid(tp: int | None, ep: int | None, spec_file: str | None, plan: Path | None):
    """The grid of this run: --tp/--ep, else the plan's, else the spec's `parallel`, else
    what torchrun started (all TP), else one rank."""
    from v4c.runtime.launch import place_from_env
    from v4c.spec.parallel import Grid

    default = (1, 1)
    if plan is not None:
        from v4c.session import load_plan

        options = load_plan(plan).options
        default = (options.get("tp", 1), options.get("ep", 1))
        if (tp or default[0], ep or default[1]) != default:
            raise V4CError(
                f"--tp/--ep: the plan is for tp={default[0]} x ep={default[1]} "
                "(compile again to change it)"
            )
    elif spec_file is not None:
        from v4c.spec import load_spec

        p = load_spec(spec_file).parallel
        default = (p.tp, p.ep)
    place = place_from_env()
    if place is not None and tp is None and default == (1, 1):
        ep = ep or 1
        tp = place.world // ep
    return Grid(tp or default[0], ep or default[1])


def start_ranks(grid, target, kwargs: dict, spec=None) -> bool:
    """Start the ranks here if this process is the launcher of a multi-rank run (True: they
    ran, the caller is done); False: run on (one rank, or one process). `spec`, when known,
    is checked first: a split it cannot take is refused before any rank starts."""
    from v4c.runtime.launch import place_from_env, spawn

    if grid.world == 1 or place_from_env() is not None:
        return False
    if spec is not None:
        check_grid(spec, grid)
    typer.echo(f"starting {grid.world} ranks (tp={grid.tp} x ep={grid.ep}) here", err=True)
    spawn(grid.world, target, (kwargs,))
    return True


def check_grid(spec, grid) -> None:
    """A V4CError naming every field the split does not divide, one line each."""
    from v4c.spec.parallel import grid_problems

    problems = grid_problems(spec, grid.tp, grid.ep)
    if problems:
        raise V4CError("\n".join(f"--tp {grid.tp} --ep {grid.ep}: {p}" for p in problems))


def run_spec(spec_file: str | None, checkpoint: Path | None, plan: Path | None):
    """The spec a run will use, found without reading weights (None: not known here)."""
    import json

    from v4c.spec import ModelSpec, load_spec

    if plan is not None:
        from v4c.session import load_plan

        return ModelSpec.model_validate(load_plan(plan).model)
    if spec_file is not None:
        return load_spec(spec_file)
    if checkpoint is None:
        return load_spec("tiny")  # the embedded default
    config = Path(checkpoint) / "config.json"
    if not config.is_file():
        return None
    from v4c.spec.config_io import spec_from_config

    try:
        return spec_from_config(json.loads(config.read_text()), Path(checkpoint).name)
    except (ValueError, V4CError):
        return None  # the rank that reads it reports the problem


def join_ranks(grid, device: str | None):
    """This process's communicator (None on one process); cuda ranks take GPU LOCAL_RANK."""
    from v4c.envs import dist_timeout
    from v4c.runtime.launch import place_from_env

    place = place_from_env()
    if place is None:
        if grid.world > 1:
            raise V4CError("internal: a multi-rank run outside its ranks")
        return None
    import torch

    from v4c.runtime.distributed import join

    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return join(grid, place, kind, dist_timeout())


@contextmanager
def only_rank0_speaks(comm) -> Iterator[None]:
    """Discard this rank's output unless it is rank 0 (errors leave the block and are
    reported by the caller)."""
    if comm is None or comm.rank == 0:
        yield
        return
    with ExitStack() as stack:
        devnull = stack.enter_context(open(os.devnull, "w"))
        stack.enter_context(redirect_stdout(devnull))
        stack.enter_context(redirect_stderr(devnull))
        yield
