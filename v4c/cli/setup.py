"""What `v4c run` and `v4c chat` decide before the first token, each choice checked and
said at start with its reason: the device, the dtype, the CPU threads, the numerics, the
backend and the longest sequence. torch is imported by the caller's command only.

Why the CLI decides rather than `open_session`: a user must see what was picked and why,
and a combination that cannot run (the Triton kernels without a GPU or the interpreter) must
be one line saying what to do, before the checkpoint is read. The rules themselves are
`v4c.session`'s and `v4c.limits`'.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from v4c.envs import cache_dir, cpu_threads
from v4c.errors import V4CError
from v4c.paths import need_folder
from v4c.spec import load_spec


def log(message: str) -> None:
    typer.echo(message, err=True)


def default_threads() -> int:
    """One fewer than the cores this process may use, at least one (see `--threads`)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def open_cli_session(
    checkpoint: Path | None,
    spec_file: str | None,
    device: str | None,
    numerics: str | None,
    backend: str,
    max_seq: int | None,
    threads: int | None,
    plan: Path | None = None,
    cuda_graphs: bool = True,
    comm=None,
    max_batch: int = 1,
    max_tokens: int | None = None,
    random_weights: bool = False,
    device_gb: float | None = None,
    expert_profile: Path | None = None,
):
    """(session, max_seq) after every choice is checked and said; see the module doc. With
    `plan` (a `v4c compile` folder) the spec, numerics, activation dtype and limits are the
    plan's. `comm`: this process is a rank of a TP x EP grid (`v4c.cli.ranks`); it runs on
    the rank's device. `max_batch`: the cache rows, sequences generated at once (`run
    --prompt-file`, a server's batch); `max_tokens`: the longest prefill step a compiled plan
    is made for (a server's). `random_weights`: the spec (--spec, or the plan's) with random
    weights, no checkpoint. `device_gb`, `expert_profile`: the device budget the plan is
    compiled for (`v4c.budget`: experts that do not fit live in host memory)."""
    if numerics not in (None, "official", "plain"):
        raise V4CError(f"--numerics: expected official or plain, got {numerics!r}")
    if backend not in ("auto", "torch", "triton"):
        raise V4CError(f"--backend: expected auto, torch or triton, got {backend!r}")
    if device not in (None, "cpu", "cuda"):
        raise V4CError(f"--device: {device!r} is not available here (use cpu or cuda)")
    if random_weights and (checkpoint is not None or (spec_file is None and plan is None)):
        raise V4CError(
            "--random-weights: give the model as a spec (v4c run SPEC --random-weights, or "
            "--spec SPEC) or a plan (--plan DIR), not a checkpoint"
        )
    if checkpoint is not None:
        from v4c.hub import resolve_checkpoint

        checkpoint = resolve_checkpoint(checkpoint, log)
        need_folder(checkpoint, "checkpoint folder", option="--checkpoint")
    spec = load_spec(spec_file) if spec_file else None

    import torch

    from v4c.ir.types import torch_dtype
    from v4c.limits import choose_max_seq
    from v4c.runtime.checkpoint.read import read_spec
    from v4c.runtime.checkpoint.tiny_cache import tiny_checkpoint
    from v4c.session import (
        checkpoint_layout,
        default_backend,
        default_numerics,
        load_plan,
        open_session,
    )

    compiled = load_plan(plan) if plan is not None else None
    if compiled is not None:
        from v4c.spec import ModelSpec

        held = compiled.options["numerics"]
        if numerics not in (None, held):
            raise V4CError(
                f"--numerics {numerics}: the plan was compiled with numerics {held} "
                f"(compile again with --numerics {numerics} to change it)"
            )
        spec, numerics = ModelSpec.model_validate(compiled.model), held
        if max_batch > compiled.options["max_batch"]:
            raise V4CError(
                f"--prompt-file: {max_batch} prompts, the plan runs at most "
                f"{compiled.options['max_batch']} at once (compile it with --max-batch "
                f"{max_batch})"
            )
        if checkpoint is None and not random_weights and spec != load_spec("tiny"):
            raise V4CError(
                f"--plan {plan}: the plan is for {spec.name}, not the embedded tiny model; "
                "pass --checkpoint FOLDER with its weights, or --random-weights to run it "
                "with random ones"
            )

    device, device_why = _device(device, torch.cuda.is_available())
    ranks = comm.grid.world if comm is not None else 1
    dtype, dtype_why = (
        (torch.bfloat16, "bf16 on CUDA") if device == "cuda" else (torch.float32, "fp32 on CPU")
    )
    if compiled is not None:
        held = compiled.options["dtype"]
        dtype, dtype_why = torch_dtype(held), "the plan's"
    if device == "cpu":
        threads, threads_why = choose_threads(threads, ranks)
        torch.set_num_threads(threads)
        dtype_why += f", {threads} thread{'s' * (threads > 1)}: {threads_why}"
    if compiled is not None:  # the engine holds caches for every sequence of the plan
        limit = _plan_fits(spec, device, dtype, compiled.options, ranks, plan)
    if random_weights:
        from v4c.runtime.checkpoint.tiny_cache import random_checkpoint

        _check_disk(spec)
        folder = random_checkpoint(cache_dir(), spec, log)
    else:
        folder = Path(checkpoint) if checkpoint is not None else tiny_checkpoint(cache_dir(), log)
    spec = read_spec(folder, spec)
    if numerics:
        numerics_why = "the plan's" if compiled is not None else "--numerics"
    else:
        numerics, numerics_why = default_numerics(checkpoint_layout(folder, spec))
    if backend == "auto":
        backend, backend_why = default_backend(device, numerics)
    else:
        backend_why = "--backend"
        _check_triton(backend, device)
    if compiled is not None:
        max_seq = max_seq or compiled.options["max_seq"]
        if max_seq != compiled.options["max_seq"]:
            raise V4CError(
                f"--max-seq {max_seq}: the plan's caches hold {compiled.options['max_seq']} "
                "tokens (compile again with --max-seq to change it)"
            )
    if comm is not None and device == "cuda":
        device, device_why = str(comm.device), f"{device_why}; rank {comm.rank}'s GPU"
    if compiled is None:
        limit = choose_max_seq(spec, device, dtype, max_seq, ranks, max_batch, device_gb)
    log(f"{spec.name} from {folder}")
    if comm is not None:
        backend_name = "nccl" if device.startswith("cuda") else "gloo"
        g = comm.grid
        log(f"{g.world} ranks: tp={g.tp} x ep={g.ep} over torch.distributed ({backend_name})")
    log(f"device {device} ({device_why}); dtype {str(dtype).removeprefix('torch.')} ({dtype_why})")
    log(f"backend {backend} ({backend_why}); numerics {numerics} ({numerics_why})")
    log(f"max_seq {limit.max_seq} tokens ({limit.why})")
    session = open_session(
        folder,
        spec,
        device=device,
        dtype=dtype,
        numerics=numerics,
        backend=backend,
        max_seq=limit.max_seq,
        plan=compiled,
        max_batch=max_batch,
        **({} if max_tokens is None else {"max_tokens": max_tokens}),
        # a captured decode step holding NCCL collectives is not verified yet: eager
        cuda_graphs=cuda_graphs and comm is None,
        log=log,
        comm=comm,
        device_gb=device_gb,
        expert_profile=expert_profile,
    )
    return session, limit.max_seq


def _plan_fits(spec, device: str, dtype, options: dict, ranks: int, plan: Path):
    """The plan's max_seq checked against the memory for its max_batch sequences; else what
    to compile instead (its limits are fixed: no option of `run` changes them)."""
    from v4c.limits import choose_max_seq

    try:
        return choose_max_seq(spec, device, dtype, options["max_seq"], ranks, options["max_batch"])
    except V4CError as err:
        raise V4CError(
            f"--plan {plan}: its caches ({options['max_batch']} sequences of "
            f"{options['max_seq']} tokens) do not fit: {str(err).removeprefix('--max-seq: ')}; "
            "compile it with a smaller --max-batch or --max-seq"
        ) from None


def _check_disk(spec) -> None:
    """A random-weights checkpoint is written to the cache first: refuse one that cannot fit
    (a Flash-sized spec is hundreds of GB) before writing anything."""
    import shutil

    from v4c.spec.params import count_params

    root = cache_dir()
    probe = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
    need = count_params(spec).total  # about a byte a parameter in FP8/FP4, a bit more
    free = shutil.disk_usage(probe).free
    if need > free // 2:
        raise V4CError(
            f"--random-weights: {spec.name} has {need / 1e9:.1f} B parameters; its random "
            f"checkpoint would not fit the cache's disk ({free / 1e9:.1f} GB free at {probe})"
        )


def choose_threads(requested: int | None, ranks: int = 1) -> tuple[int, str]:
    """(torch's CPU threads, why): --threads, else $V4C_THREADS, else the cores less one
    (shared by the ranks on this machine); `run`, `chat` and `bench` alike."""
    if requested:
        return requested, "--threads"
    if cpu_threads():
        return cpu_threads(), "$V4C_THREADS"
    if ranks > 1:  # the ranks share this machine's cores
        return max(1, default_threads() // ranks), f"the cores less one, shared by {ranks} ranks"
    return default_threads(), f"the {len(os.sched_getaffinity(0))} cores less one"


def _device(device: str | None, has_cuda: bool) -> tuple[str, str]:
    if device is None:
        return ("cuda", "a CUDA GPU is present") if has_cuda else ("cpu", "no CUDA GPU")
    if device == "cuda" and not has_cuda:
        raise V4CError("--device: 'cuda' is not available here (no CUDA GPU); use cpu")
    return device, "--device"


def _check_triton(backend: str, device: str) -> None:
    if backend != "triton":
        return
    if device != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise V4CError(
            "--backend triton: the Triton kernels need a CUDA GPU and there is none here; "
            "use --backend torch (or TRITON_INTERPRET=1 to run them, slowly, in the interpreter)"
        )


def cli_drafter(session, speculative: str | None, draft_tokens: int, sampler, comm=None):
    """The drafter `--speculative` asks for (said at start with why), or None. Default
    (auto): the MTP block with `draft_tokens` drafts, stopping once it does not pay, when the
    plan has the draft entry point (it is compiled with one when the checkpoint holds MTP
    weights), else off. Not yet across
    ranks (`comm`): the acceptance draws would have to be the same on every rank."""
    from v4c.runtime.drafting import MtpDrafter

    if comm is not None:
        if speculative == "mtp":
            raise V4CError("--speculative mtp: not yet with --tp/--ep (use --speculative off)")
        log("speculative off (not yet across ranks)")
        return None
    has_draft = "draft" in session.engine.programs
    if speculative == "mtp" and not has_draft:
        raise V4CError(
            "--speculative mtp: the plan has no draft entry point (the checkpoint has no MTP "
            "weights, or the plan was compiled with --max-draft 0)"
        )
    if speculative == "off" or not has_draft:
        why = "--speculative" if speculative == "off" else "the plan has no draft entry point"
        log(f"speculative off ({why})")
        return None
    auto = speculative != "mtp"
    drafter = MtpDrafter(session.engine, sampler, draft_tokens, auto=auto)
    why = "--speculative" if speculative else "the plan drafts with the MTP block"
    mode = "auto: while it pays" if auto else "mtp"
    log(f"speculative {mode}, {draft_tokens} draft token{'s' * (draft_tokens > 1)} ({why})")
    return drafter


def choose_drafter(session, speculative, draft_tokens: int, sampler, comm, penalties):
    """`cli_drafter`'s choice, except that penalties turn speculation off: they change the
    logits of each token, which the verify step samples without them."""
    if penalties.active:
        if speculative == "mtp":
            raise V4CError("--speculative mtp: not with the penalties (use --speculative off)")
        log("speculative off (the penalties apply to every main-model step)")
        return None
    return cli_drafter(session, speculative, draft_tokens, sampler, comm)
