"""How long a sequence `v4c run` and `v4c chat` let the caches hold (`--max-seq`), and why.

Why its own module: the limit is sized before anything is compiled, from three facts that
live elsewhere: the model's `max_position_embeddings`, the cache bytes each token adds (from
the state nodes of the spec's graph, in the dtype the caches are held in) and the memory the
device has free. Every decode step reads the whole cache it was sized for, so the default
stays at the compiler's default length unless the model or the memory allow less; a longer
limit is for the user to ask for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from math import prod

import torch

from v4c.errors import V4CError
from v4c.ir.build import build
from v4c.passes.base import CompileOptions
from v4c.ir.types import torch_dtype
from v4c.spec import ModelSpec
from v4c.spec.params import count_params

GiB = 1 << 30
MEMORY_SHARE = 0.5  # of the memory left after the weights, the rest is for activations


@dataclass(frozen=True)
class SeqLimit:
    max_seq: int
    why: str


def choose_max_seq(
    spec: ModelSpec,
    device: str,
    dtype: torch.dtype,
    requested: int | None,
    ranks: int = 1,
    batch: int = 1,
    device_gb: float | None = None,
) -> SeqLimit:
    """`requested` checked against the model and the memory, or the default with its reason.
    `ranks`: the weights are split over that many (each holds about its share); `batch`:
    sequences held at once, each with caches of max_seq tokens; `device_gb`: a device budget
    (`v4c.budget`), which the caches share with the weights the device must hold (a budget
    below those is left to `v4c.budget`, which refuses it with the minimum that fits)."""
    per_token = cache_bytes_per_token(spec, dtype) * batch
    weights = held_weights(spec, dtype, ranks, batch, device_gb is not None)
    free = free_memory(device)
    if device_gb is not None and int(device_gb * GiB) > weights:
        free = min(free, int(device_gb * GiB))
    else:
        device_gb = None
    spare = max(0, free - weights)
    fits = max(1, int(spare * MEMORY_SHARE) // max(per_token, 1))
    model = spec.max_position_embeddings
    after = "the weights" if device_gb is None else "the weights a device budget keeps"
    memory = f"{spare / GiB:.1f} GiB free after {after}, {per_token} B of cache a token"
    within = device if device_gb is None else f"{device} within --device-gb {device_gb:g}"
    if requested is not None:
        if requested > model:
            raise V4CError(f"--max-seq: {spec.name} has {model} positions, got {requested}")
        if requested > fits:
            raise V4CError(
                f"--max-seq: {requested} tokens do not fit on {within} ({memory}); "
                f"at most {fits} do"
            )
        return SeqLimit(requested, f"--max-seq; the model allows {model}, the memory {fits}")
    default = CompileOptions().max_seq
    chosen = min(model, fits, default)
    if chosen == default:
        why = (
            f"default; the model allows {model}, the memory {fits} ({memory}); every step "
            "reads the whole cache, so longer is slower: --max-seq N"
        )
    else:
        limit = "the model's positions" if chosen == model else f"the memory ({memory})"
        why = f"as many as {limit} allow"
    return SeqLimit(chosen, why)


def held_weights(spec: ModelSpec, dtype: torch.dtype, ranks: int, batch: int, budget: bool):
    """Bytes of weights a rank holds on the device (each parameter in `dtype`, about: FP8
    and FP4 weights hold less). Under a device budget (`v4c.budget`) the caches come before
    the routed experts, which go to host memory when they do not fit: the device must hold
    all but them, and each layer's slot cache of a one-token step's picks."""
    size = torch.empty((), dtype=dtype).element_size()
    params = count_params(spec)
    held = params.total
    if budget:
        routed = params.by_part["routed_experts"]
        expert = 3 * spec.hidden_size * spec.moe.intermediate_size
        layers = routed // (expert * spec.moe.num_experts)
        slots = min(batch * spec.moe.top_k, spec.moe.num_experts)
        held += layers * slots * expert - routed
    return held * size // ranks


def cache_bytes_per_token(spec: ModelSpec, dtype: torch.dtype) -> int:
    """Bytes the caches of one sequence grow by per token (compressed KV, indexer keys),
    with IR-bf16 values held in `dtype` as the engine holds them."""
    total = 0
    for node in build(spec).nodes():
        if node.op.source != "state":
            continue
        t = node.types[0]
        size = torch.empty((), dtype=torch_dtype(t.dtype, dtype)).element_size()
        grow = prod(t.resolve({"N": 1, "S": 1 << 20})) - prod(t.resolve({"N": 1, "S": 0}))
        total += grow * size
    return -(-total // (1 << 20))


def free_memory(device: str) -> int:
    """Bytes free on `device`: CUDA's free memory, or the host's available memory."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(held: int, prompt: int, max_seq: int, max_new: int) -> None:
    """Refuse, before generating, a prompt the caches cannot hold, naming what to pass."""
    if held + prompt > max_seq:
        before = f"the conversation's {held} tokens and " if held else ""
        raise V4CError(
            f"the prompt does not fit: {before}{prompt} prompt tokens > max_seq {max_seq}; "
            f"pass --max-seq {held + prompt + max_new - 1} (or more) for a reply of up to "
            f"{max_new} tokens"
        )


def new_token_budget(held: int, prompt: int, max_seq: int, max_new: int) -> tuple[int, bool]:
    """(tokens to generate, whether max_seq rather than max_new is the bound). n new tokens
    feed n - 1 of them back, so the caches hold held + prompt + n - 1 tokens."""
    room = max_seq - held - prompt + 1
    return (room, True) if room < max_new else (max_new, False)


def check_vocab(ids: list[int], vocab_size: int) -> None:
    """Refuse a prompt the model cannot embed: the tokenizer (the checkpoint's
    tokenizer.json, else the V4 vocabulary) gave ids past the model's vocab_size."""
    top = max(ids, default=0)
    if top >= vocab_size:
        raise V4CError(
            f"the prompt has token id {top}, the model's vocab_size is {vocab_size}: the "
            "tokenizer does not fit this model (put its tokenizer.json in the checkpoint folder)"
        )
