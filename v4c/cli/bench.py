"""`v4c bench SPEC_OR_CHECKPOINT`: measured speed of a compiled plan (see `v4c.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from v4c.cli.experts import DeviceGb, ExpertProfileOpt, RecordExperts
from v4c.cli.options import DraftTokens, Speculative, Threads
from v4c.cli.progress import StageBar
from v4c.cli.ranks import (
    Ep,
    Tp,
    join_ranks,
    only_rank0_speaks,
    resolve_grid,
    run_spec,
    start_ranks,
)
from v4c.errors import V4CError


def bench_command(
    target: Annotated[
        str | None,
        typer.Argument(
            help="A checkpoint folder, or a spec (file or shipped name); with "
            "--serve, a checkpoint folder (default: the embedded tiny model)."
        ),
    ] = None,
    random_weights: Annotated[
        bool,
        typer.Option(
            "--random-weights",
            help="Random weights for a spec (in its stored FP8/FP4 formats with --weights "
            "as-stored), no checkpoint needed.",
        ),
    ] = False,
    prompt_len: Annotated[int, typer.Option(min=1, help="Prompt tokens per sequence.")] = 128,
    decode: Annotated[int, typer.Option(min=1, help="Decode steps to time in each run.")] = 32,
    repeat: Annotated[
        int,
        typer.Option(
            min=1,
            help="Timed runs of the prefill and of the decode steps; the figures "
            "printed are the medians, with the min and max.",
        ),
    ] = 3,
    batch: Annotated[int, typer.Option(min=1, help="Sequences per step.")] = 1,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if any).")] = None,
    backend: Annotated[str, typer.Option(help="torch or triton (default: triton on CUDA).")] = "",
    weights: Annotated[str, typer.Option(help="as-stored or bf16 (see v4c compile).")] = "bf16",
    cuda_graphs: Annotated[
        bool, typer.Option("--cuda-graphs/--no-cuda-graphs", help="Replay decode steps (CUDA).")
    ] = True,
    compare: Annotated[
        str | None, typer.Option(help="hf: also run transformers (eager) on the same weights.")
    ] = None,
    speculative: Speculative = None,
    draft_tokens: DraftTokens = 1,
    threads: Threads = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the figures to this JSON file.")
    ] = None,
    tp: Tp = None,
    ep: Ep = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Bench `v4c serve` through the openai client instead: "
            "--requests streamed completions, --batch at a time (and cache rows), "
            "prompts of --prompt-len tokens, --decode new tokens each.",
        ),
    ] = False,
    requests: Annotated[int, typer.Option(min=1, help="Requests (--serve).")] = 64,
    url: Annotated[
        str | None, typer.Option(help="A running server to bench (--serve; default: start one).")
    ] = None,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help="Also print the kernel lens's ESTIMATE of this plan on a GPU target (sm_80, "
            "sm_89, sm_90; repeatable): alone on a machine without CUDA, beside the "
            "measurement on one.",
        ),
    ] = None,
    device_gb: DeviceGb = None,
    expert_profile: ExpertProfileOpt = None,
    record_experts: RecordExperts = None,
) -> None:
    """Measure prefill and decode of a plan: launches, host time, tokens/s, bandwidth. With
    --tp/--ep every rank runs its piece (started here, or by torchrun); rank 0 reports.
    With --serve: throughput, TTFT and TPOT of `v4c serve` under load."""
    if serve:
        from v4c.cli.bench_serve import bench_serve

        return bench_serve(
            target, url=url, requests=requests, concurrency=batch, prompt_len=prompt_len,
            max_tokens=decode, device=device, json_file=json_file,
        )  # fmt: skip
    if target is None:
        raise V4CError("give a checkpoint folder, or a spec with --random-weights")
    grid = resolve_grid(tp, ep, None, None)
    kwargs = {k: v for k, v in locals().items() if k != "grid"}
    if json_file is not None:
        _check_writable(json_file)
    if compare not in (None, "hf"):
        raise V4CError(f"--compare: expected hf, got {compare!r}")
    if compare == "hf":
        _check_transformers()
    spec = run_spec(target, None, None) if random_weights else run_spec(None, Path(target), None)
    if start_ranks(grid, _bench_rank, kwargs, spec):
        return
    import torch

    from v4c.bench import run_bench
    from v4c.bench_report import format_result, write_json

    if targets and not torch.cuda.is_available():  # nothing to measure: the estimate alone
        for line in _estimate(spec, batch, prompt_len, decode, weights, targets):
            typer.echo(line)
        return
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        raise V4CError(f"--device: {device!r} is not available here")
    backend = backend or ("triton" if device == "cuda" else "torch")
    if backend not in ("torch", "triton"):
        raise V4CError(f"--backend: expected torch or triton, got {backend!r}")
    if weights not in ("as-stored", "bf16"):
        raise V4CError(f"--weights: expected as-stored or bf16, got {weights!r}")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if not random_weights:
        _check_checkpoint(target)
    if device == "cpu":  # as run: a pool as large as the machine swings tenfold under load
        from v4c.cli.setup import choose_threads

        threads, why = choose_threads(threads, grid.world)
        torch.set_num_threads(threads)
        typer.echo(f"bench: {threads} CPU thread{'s' * (threads > 1)} ({why})", err=True)
    if spec is not None:  # before the weights are made or read (Flash-sized: minutes)
        from v4c.bench import check_memory

        mtp = speculative == "mtp" or (speculative in (None, "auto") and spec.mtp.num_layers > 0)
        alone = device_gb if not str(device).startswith("cuda") else None  # no all-resident run
        check_memory(spec, device, dtype, prompt_len=prompt_len, decode=decode, batch=batch,
                     speculative="mtp" if mtp else "off", ranks=grid.world,
                     device_gb=alone)  # fmt: skip
    comm = join_ranks(grid, device)
    if comm is not None and compare:
        raise V4CError("--compare: transformers runs in one process, not with --tp/--ep")
    with only_rank0_speaks(comm), StageBar() as stage:
        if comm is not None:
            device = str(comm.device)
        spec, tensors = _weights(target, random_weights, dtype, device, comm, stage)
        has_mtp = spec.mtp.num_layers > 0 and any(n.startswith("mtp.") for n in tensors)
        if speculative == "mtp" and (not has_mtp or comm is not None):
            why = "not yet with --tp/--ep" if has_mtp else "the weights have no MTP block"
            raise V4CError(f"--speculative mtp: {why}")
        if speculative in (None, "auto"):  # the bench measures speculation where it can
            speculative = "mtp" if has_mtp and comm is None else "off"
        result = run_bench(
            spec, tensors, device=device, dtype=dtype, backend=backend, batch=batch,
            prompt_len=prompt_len, decode=decode, weight_formats=weights,
            cuda_graphs=cuda_graphs, compare=compare, comm=comm, speculative=speculative,
            draft_tokens=draft_tokens, repeat=repeat, progress=stage, device_gb=device_gb,
            profile=expert_profile, record=record_experts,
        )  # fmt: skip
    with only_rank0_speaks(comm):
        if comm is not None:
            typer.echo(f"{comm.grid.world} ranks: tp={comm.grid.tp} x ep={comm.grid.ep}; rank 0:")
        for line in format_result(result):
            typer.echo(line)
        if json_file is not None:
            write_json(result, json_file)
        if targets:
            for line in _estimate(spec, batch, prompt_len, decode, weights, targets):
                typer.echo(line)


def _estimate(spec, batch, prompt_len, decode, weights, targets: list[str]) -> list[str]:
    """The kernel lens's estimate lines of the plan this bench runs (codegen/lens.py)."""
    from v4c.bench import bench_plan
    from v4c.codegen.lens import lens
    from v4c.codegen.lens_report import entry_lines
    from v4c.codegen.targets import target

    plan = bench_plan(
        spec, batch=batch, prompt_len=prompt_len, decode=decode, weight_formats=weights
    )
    lines = []
    for t in [target(n) for n in targets]:
        lines.append(f"kernel lens, {t.name} on {t.card.name} (ESTIMATE, not measured):")
        lines += [f"  {x}" for x in entry_lines(lens(plan, t))]
    return lines


def _check_writable(path: Path) -> None:
    """Refuse, before the run, a --json path its figures could not be written to."""
    import os

    if path.is_dir():
        raise V4CError(f"--json: {path}: is a folder; give a file name, e.g. {path / 'bench.json'}")
    parent = path.parent
    if not parent.is_dir():
        raise V4CError(f"--json: {path}: no such folder {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise V4CError(f"--json: {path}: not writable")


def _check_transformers() -> None:
    """--compare hf needs transformers with DeepSeek-V4: said before anything runs."""
    try:
        from transformers import DeepseekV4ForCausalLM  # noqa: F401
    except ImportError:
        raise V4CError(
            "--compare hf: needs transformers with DeepSeek-V4 (5.17 or newer): "
            "pip install 'transformers>=5.17'"
        ) from None


def _bench_rank(kwargs: dict) -> None:
    """One rank of `v4c bench --tp/--ep` started on this machine."""
    bench_command(**kwargs)


def _check_checkpoint(target: str) -> None:
    """A target that is not a checkpoint folder (without --random-weights) is refused first."""
    if Path(target).is_dir():
        return
    from v4c.errors import SpecError
    from v4c.spec.load import resolve_spec_path

    try:
        resolve_spec_path(target)  # a file, or a shipped spec's name
    except SpecError:
        raise V4CError(
            f"{target}: no such checkpoint folder or spec; bench reads a checkpoint "
            "folder, or a spec with --random-weights"
        ) from None
    raise V4CError(f"{target}: not a checkpoint folder; to bench a spec, add --random-weights")


def _weights(target: str, random: bool, dtype, device: str, comm, stage):
    """(spec, dense weights by official name) from a checkpoint or random for a spec (made on
    the device: Flash-sized weights take a moment there, minutes on a CPU). A rank reads
    only its pieces of a checkpoint (a function of the plan, see `run_bench`). `stage` is
    told which of the two starts, once the target is known to be one."""
    from v4c.spec import load_spec

    if random:
        from v4c.runtime.checkpoint.random_weights import random_weights

        spec = load_spec(target)
        stage(f"making random weights for {spec.name}")
        return spec, random_weights(spec, seed=0, dtype=dtype, device=device)
    folder = Path(target)  # a folder: `_check_checkpoint` said so before anything was said
    from v4c.runtime.checkpoint import load_checkpoint

    stage(f"reading {folder}")
    if comm is None:
        return load_checkpoint(folder, dtype=dtype, progress=False)
    from v4c.runtime.checkpoint.read import read_spec
    from v4c.runtime.checkpoint.pieces import rank_ranges

    spec = read_spec(folder, None)

    def pieces(plan):
        return load_checkpoint(
            folder, spec, dtype=dtype, device=device, progress=False, names=set(plan.params),
            pieces=rank_ranges(plan.params, comm.grid, comm.rank),
        )[1]  # fmt: skip

    return spec, pieces
