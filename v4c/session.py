"""Everything `v4c run` and `v4c chat` set up before the first token: the checkpoint (the
embedded tiny one by default, made on first use), its spec, the plan compiled for it, the
weights the plan needs, the engine and the tokenizer."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from v4c.compile import compile_spec
from v4c.errors import CheckpointError
from v4c.envs import cache_dir
from v4c.ir.plan import Plan
from v4c.passes.base import CompileOptions
from v4c.runtime.checkpoint import load_checkpoint
from v4c.runtime.checkpoint_read import detect_layout, open_shards, read_spec
from v4c.runtime.engine import Engine
from v4c.runtime.tiny_cache import tiny_checkpoint
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


def default_numerics(folder: Path) -> tuple[str, str]:
    """(numerics, why): the official release is run as the official code runs it."""
    with ExitStack() as stack:
        layout = detect_layout(open_shards(folder, stack).headers)
    if layout == "official":
        return "official", "the checkpoint is in the official FP8/FP4 layout"
    return "plain", f"the checkpoint is in the {layout} layout"


def default_backend(device: str, numerics: str) -> tuple[str, str]:
    """(backend, why) for `--backend auto`: the kernels do not implement the official
    rounding yet, and need a GPU."""
    if torch.device(device).type != "cuda":
        return "torch", "no CUDA device"
    if numerics != "plain":
        return "torch", "the Triton kernels do not implement official numerics yet"
    return "triton", "CUDA with plain numerics"


def quantised_kernel_weights(plan: Plan) -> frozenset[str]:
    """The weights only the expert kernels read, which take them FP8/FP4 as stored."""
    readers: dict[str, set[str]] = {}
    for launch in plan.entries["decode"].launches:
        for ref in launch.inputs:
            if ref.kind == "param":
                readers.setdefault(ref.name, set()).add(launch.op)
    return frozenset(name for name, ops in readers.items() if ops <= {"grouped_swiglu", "swiglu"})


def open_session(
    checkpoint: Path | None = None,
    spec: ModelSpec | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    numerics: str | None = None,
    max_seq: int = 4096,
    max_tokens: int = 512,
    max_batch: int = 1,
    backend: str = "auto",
    progress: bool = True,
    log=print,
) -> Session:
    folder = Path(checkpoint) if checkpoint is not None else tiny_checkpoint(cache_dir(), log)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    spec = read_spec(folder, spec)
    if numerics is None:
        numerics = default_numerics(folder)[0]
    if backend == "auto":
        backend = default_backend(device, numerics)[0]
    options = CompileOptions(max_batch, max_tokens, max_seq, numerics=numerics)
    plan = compile_spec(spec, options).plan
    keep = quantised_kernel_weights(plan) if backend == "triton" else frozenset()
    _, weights = load_checkpoint(
        folder,
        spec,
        dtype=dtype,
        device=device,
        progress=progress,
        names=set(plan.params),
        keep_quantised=keep,
    )
    engine = Engine(plan, weights, device=device, dtype=dtype, backend=backend)
    return Session(spec, engine, load_tokenizer(folder), folder, numerics, backend)
