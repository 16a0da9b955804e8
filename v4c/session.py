"""Everything `v4c run` and `v4c chat` set up before the first token: the checkpoint (the
embedded tiny one by default, made on first use), its spec, the plan compiled for it, the
weights the plan needs, the engine and the tokenizer."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from v4c.compile import compile_spec
from v4c.errors import CheckpointError
from v4c.envs import cache_dir
from v4c.ir.plan import Plan
from v4c.passes.base import CompileOptions
from v4c.runtime.checkpoint import load_checkpoint, make_tiny
from v4c.runtime.checkpoint_read import detect_layout, open_shards, read_spec
from v4c.runtime.engine import Engine
from v4c.runtime.tokenizer import V4Tokenizer, load_tokenizer
from v4c.spec import ModelSpec

TINY_SEED = 0


@dataclass
class Session:
    spec: ModelSpec
    engine: Engine
    tokenizer: V4Tokenizer
    checkpoint: Path
    numerics: str
    backend: str


def tiny_checkpoint(log=print) -> Path:
    """The embedded default model's checkpoint in the cache, written on first use (atomically:
    a half-written folder is never taken for a finished one)."""
    folder = cache_dir() / "checkpoints" / f"tiny-seed{TINY_SEED}"
    if not (folder / "config.json").exists():
        log(f"making the tiny default checkpoint in {folder} (once)")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tiny-"))
        make_tiny(tmp / "ckpt", seed=TINY_SEED)
        try:
            os.replace(tmp / "ckpt", folder)
        except OSError:  # another process finished first
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


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
    max_seq: int = CompileOptions.max_seq,
    max_tokens: int = CompileOptions.max_tokens,
    max_batch: int = CompileOptions.max_batch,
    backend: str = "auto",
    progress: bool = True,
    log=print,
) -> Session:
    folder = Path(checkpoint) if checkpoint is not None else tiny_checkpoint(log)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    spec = read_spec(folder, spec)
    if numerics is None:  # the official release is run as the official code runs it
        with ExitStack() as stack:
            numerics = (
                "official"
                if detect_layout(open_shards(folder, stack).headers) == "official"
                else "plain"
            )
    if backend == "auto":  # the kernels do not implement the official rounding yet
        backend = (
            "triton" if torch.device(device).type == "cuda" and numerics == "plain" else "torch"
        )
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
