"""Everything `v4c run` and `v4c chat` set up before the first token: the checkpoint (the
embedded tiny one by default, made on first use), its spec, the plan compiled for it, the
weights the plan needs, the engine and the tokenizer."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from v4c.compile import compile_spec
from v4c.errors import CheckpointError, V4CError
from v4c.envs import cache_dir
from v4c.ir.plan import Plan
from v4c.ir.types import ir_dtype, torch_dtype
from v4c.passes.base import CompileOptions
from v4c.paths import need_folder
from v4c.runtime.checkpoint import load_weights
from v4c.runtime.offload import layer_of
from v4c.runtime.checkpoint.detect import detect_layout
from v4c.runtime.checkpoint.read import open_shards, read_spec
from v4c.runtime.engine import Engine
from v4c.runtime.checkpoint.tiny_cache import tiny_checkpoint
from v4c.runtime.tokenizer import V4Tokenizer, load_tokenizer
from v4c.spec import ModelSpec


@dataclass
class Session:
    spec: ModelSpec
    engine: Engine
    tokenizer: V4Tokenizer
    checkpoint: Path
    numerics: str
    backend: str
    comm: object = None  # this rank's communicator when the plan is split over ranks


def checkpoint_layout(folder: Path, spec: ModelSpec) -> str:
    with ExitStack() as stack:
        return detect_layout(open_shards(folder, stack), spec)


def has_mtp_weights(folder: Path) -> bool:
    """Whether the checkpoint holds the MTP block (`mtp.*`; transformers' layout has none)."""
    with ExitStack() as stack:
        return any(name.startswith("mtp.") for name in open_shards(folder, stack).headers)


def default_numerics(layout: str) -> tuple[str, str]:
    """(numerics, why): the official release is run as the official code runs it."""
    if layout == "official":
        return "official", "the checkpoint is in the official FP8/FP4 layout"
    return "plain", f"the checkpoint is in the {layout} layout"


def default_backend(device: str, numerics: str) -> tuple[str, str]:
    """(backend, why) for `--backend auto`: the Triton kernels on CUDA, for every numerics
    mode (they compute the official roundings too); the torch reference elsewhere (the
    kernels would run in Triton's interpreter)."""
    if torch.device(device).type != "cuda":
        return "torch", "no CUDA device"
    return "triton", f"CUDA ({numerics} numerics)"


def open_session(
    checkpoint: Path | None = None,
    spec: ModelSpec | None = None,
    *,
    plan: Plan | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    numerics: str | None = None,
    max_seq: int = CompileOptions.max_seq,
    max_tokens: int = CompileOptions.max_tokens,
    max_batch: int = CompileOptions.max_batch,
    backend: str = "auto",
    cuda_graphs: bool | None = None,
    kernel_root: Path | None = None,
    progress: bool = True,
    log=print,
    comm=None,
    device_gb: float | None = None,
    expert_profile: Path | None = None,
) -> Session:
    """Compile the checkpoint's spec for these limits, or run `plan` (what `v4c compile`
    wrote, `load_plan`) as it is: its spec, limits, numerics, dtype and weight formats.
    `comm` (`runtime.distributed.join`): this process is one rank of a TP x EP grid; the
    plan is compiled for that grid, and the rank reads only its pieces of the weights.
    `device_gb`: the compiled plan fits that many GiB, the routed experts that do not fit in
    pinned host memory (`v4c.budget`; resident ones from the profile `expert_profile`)."""
    folder = Path(checkpoint) if checkpoint is not None else tiny_checkpoint(cache_dir(), log)
    need_folder(folder, "checkpoint folder", CheckpointError)
    if plan is not None:
        spec = read_spec(folder, ModelSpec.model_validate(plan.model))
        if numerics not in (None, plan.options["numerics"]):
            raise V4CError(
                f"--numerics {numerics}: the plan was compiled with numerics "
                f"{plan.options['numerics']} (compile again to change it)"
            )
        numerics = plan.options["numerics"]
        dtype = torch_dtype(plan.options["dtype"])
    else:
        spec = read_spec(folder, spec)
    layout = checkpoint_layout(folder, spec)
    mtp = has_mtp_weights(folder)
    if plan is not None and "draft" in plan.entries and not mtp:
        raise V4CError(
            f"{folder}: the plan drafts with the MTP block, the checkpoint has no mtp.* "
            f"weights (compile with --max-draft 0)"
        )
    if numerics is None:
        numerics = default_numerics(layout)[0]
    if backend == "auto":
        backend = default_backend(device, numerics)[0]
    if plan is None:
        # the reference backend reads dense weights: widen them once at load, not every step
        weights = "as-stored" if backend == "triton" and layout == "official" else "bf16"
        grid = (comm.grid.tp, comm.grid.ep) if comm is not None else (1, 1)
        options = CompileOptions(
            max_batch, max_tokens, max_seq, numerics=numerics, weights=weights,
            dtype=ir_dtype(str(dtype)), max_draft=CompileOptions.max_draft if mtp else 0,
            tp=grid[0], ep=grid[1],
        )  # fmt: skip
        plan = compile_spec(spec, options).plan
        if device_gb is not None:
            from v4c.budget import apply, offload_line

            apply(plan, device_gb, spec.moe.top_k, expert_profile)
            log(offload_line(plan.offload) or f"--device-gb {device_gb:g}: every expert fits")
    elif device_gb is not None or expert_profile is not None:
        raise V4CError(
            "--device-gb/--expert-profile: a compiled plan (--plan) keeps the budget it was "
            "compiled with (v4c compile --device-gb)"
        )
    rank = (comm.grid, comm.rank) if comm is not None else None
    # an offloaded layer's experts are read one layer at a time, when the engine splits them
    # into its device bank and pinned host store: the host never holds them all twice
    resident = plan.offload.get("resident", {})
    stack = "{}.ffn.experts.{{e}}.w1.weight"
    partly = {layer for layer, kept in resident.items()
              if len(kept) < plan.params[stack.format(layer)].shape[0]}  # fmt: skip
    away = {n for n in plan.params if layer_of(n) in partly}
    tensors = load_weights(
        folder, plan, dtype=dtype, device=device, progress=progress, rank=rank,
        names=set(plan.params) - away,
    )  # fmt: skip

    def experts(layer: str) -> dict:
        mine = {n for n in away if layer_of(n) == layer}
        return load_weights(folder, plan, dtype=dtype, device="cpu", progress=False,
                            rank=rank, names=mine)  # fmt: skip

    engine = Engine(
        plan,
        tensors,
        device=device,
        dtype=dtype,
        backend=backend,
        cuda_graphs=cuda_graphs,
        kernel_root=kernel_root,
        comm=comm,
        experts=experts,
    )
    return Session(spec, engine, load_tokenizer(folder), folder, numerics, backend, comm)


def load_plan(folder: Path) -> Plan:
    """The plan `v4c compile` wrote into `folder`."""
    path = need_folder(folder, "plan folder (what v4c compile -o wrote)") / "plan.json"
    try:
        return Plan.from_json(path.read_text())
    except OSError as err:
        raise V4CError(
            f"{path}: cannot read the plan ({err.strerror or err}); run v4c compile"
        ) from None
    except (ValueError, KeyError, TypeError) as err:
        raise V4CError(
            f"{path}: not a plan of this v4c version ({err}); compile it again"
        ) from None
