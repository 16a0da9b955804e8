"""`v4c bench`: the speed of a compiled plan, measured, with the baselines in the same run.

Per entry point it reports launches per step, host time per step and per launch, prefill
tokens/s, decode ms/token and tokens/s, the bytes the plan reads per decode token and the
bandwidth that achieves, against the device's own copy bandwidth measured in the same
process (`bench_measure`). `compare="hf"` runs transformers' `DeepseekV4ForCausalLM`
(eager) on the same weights and reports both and the ratio. Speed is measured here, never
in unit tests.

With speculation (`speculative="mtp"`) it also generates greedily `decode` tokens after the
prompts three ways, each after a warm-up run: plainly, with the MTP block drafting K tokens,
and with the perfect drafter for K = 1, 2, 3 (`bench_compare`); it reports tokens/s, the
acceptance rate and the tokens per main-model step of each, and the ratios to the plain run.

This module runs a bench from start to end: the plan for its limits, the memory check, the
engine, then each measurement, saying every stage as it starts (`progress`) so that a long
run on a CPU is never silent.
"""

from __future__ import annotations

from pathlib import Path

import torch

from v4c.bench_measure import Stages, bench_engine, engine_stages
from v4c.bench_report import BenchResult
from v4c.compile import compile_spec
from v4c.ir.types import ir_dtype
from v4c.passes.base import CompileOptions
from v4c.runtime.engine import Engine
from v4c.spec import ModelSpec


def bench_plan(
    spec: ModelSpec, *, batch: int, prompt_len: int, decode: int, numerics: str = "plain",
    weight_formats: str = "bf16", dtype: torch.dtype = torch.bfloat16, speculative: str = "off",
    grid: tuple[int, int] = (1, 1),
):  # fmt: skip
    """The plan a bench of these limits runs (and `v4c bench --target` estimates)."""
    drafts = CompileOptions.max_draft if speculative == "mtp" else 0
    # prefill in steps of at most max_tokens; a draft's first step covers the MTP block's window
    steps = max(
        min(prompt_len, CompileOptions.max_tokens), spec.attention.sliding_window * (drafts > 0)
    )
    options = CompileOptions(
        max_batch=batch, max_tokens=steps, max_seq=bench_seq(prompt_len, decode, speculative),
        numerics=numerics, weights=weight_formats, dtype=ir_dtype(str(dtype)), max_draft=drafts,
        tp=grid[0], ep=grid[1],
    )  # fmt: skip
    return compile_spec(spec, options).plan


def run_bench(
    spec: ModelSpec,
    weights: dict,
    *,
    device: str,
    dtype: torch.dtype,
    backend: str,
    batch: int,
    prompt_len: int,
    decode: int,
    numerics: str = "plain",
    weight_formats: str = "bf16",
    cuda_graphs: bool = True,
    compare: str | None = None,
    speculative: str = "off",
    draft_tokens: int = 1,
    comm=None,
    repeat: int = 1,
    progress=lambda description, done, total: None,
    device_gb: float | None = None,
    profile: Path | None = None,
    record: Path | None = None,
) -> BenchResult:
    """Compile `spec` for this run's limits, bind it to `weights` (dense tensors: the ones the
    plan keeps FP8/FP4 are quantised to their stored format first) and measure it. `comm`:
    this process is one rank of a TP x EP grid (`runtime.distributed`), and every rank runs
    the same steps; `weights` may also be a function of the plan giving what it needs (a
    rank's pieces read from a checkpoint), else the whole weights are cut to the rank's.
    The prompt is prefilled in steps of at most `CompileOptions.max_tokens` tokens, as
    `v4c run` does, so a long prompt needs the caches' memory, not a prompt-long step's;
    what the plan needs is checked against the device's free memory before binding.
    `device_gb`: a device budget (`v4c.budget`, resident experts from the routing profile
    at `profile`; on a GPU the all-resident plan's decode step is timed after, beside it);
    `record`: write the routing profile of the run there. `progress(description, stages done,
    stages in all)` is told each stage as it starts."""
    from v4c.runtime.checkpoint.pieces import rank_weights
    from v4c.runtime.checkpoint.random_weights import as_stored

    device = torch.device(device)
    grid = (comm.grid.tp, comm.grid.ep) if comm is not None else (1, 1)
    resident = device_gb is not None and device.type == "cuda"  # timed again all-resident
    check_memory(spec, device, dtype, prompt_len=prompt_len, decode=decode, batch=batch,
                 speculative=speculative, ranks=grid[0] * grid[1],
                 device_gb=None if resident else device_gb)  # fmt: skip
    extra = (speculative == "mtp") + (compare == "hf") + resident * (1 + engine_stages(repeat))
    stages = Stages(1 + engine_stages(repeat) + extra, progress)
    stages(f"compiling {spec.name} for batch {batch}, {bench_seq(prompt_len, decode, speculative)} "
           "tokens")  # fmt: skip
    plan = bench_plan(
        spec, batch=batch, prompt_len=prompt_len, decode=decode, numerics=numerics,
        weight_formats=weight_formats, dtype=dtype, speculative=speculative, grid=grid,
    )  # fmt: skip
    if device_gb is not None:
        from v4c.budget import apply

        apply(plan, device_gb, spec.moe.top_k, profile)
    if callable(weights):
        needed = weights(plan)
    else:
        needed = {name: weights[name] for name in plan.params}
        if comm is not None:
            needed = rank_weights(needed, plan.params, comm.grid, comm.rank)
    engine = Engine(
        plan, as_stored(needed, plan.params), device=device, dtype=dtype, backend=backend,
        cuda_graphs=cuda_graphs and comm is None, comm=comm,
    )  # fmt: skip
    picks = engine.record_experts() if record is not None else None
    result = bench_engine(
        engine,
        spec,
        batch=batch,
        prompt_len=prompt_len,
        decode=decode,
        repeat=repeat,
        stage=stages,
    )
    if picks is not None:
        from v4c.cli.experts import save_profile

        save_profile(record, spec.name, picks)
    if speculative == "mtp":
        from v4c.bench_compare import bench_speculation

        stages("greedy generation: speculation off, with the MTP block, with a perfect drafter")
        gen = torch.Generator().manual_seed(1)
        prompts = torch.randint(0, spec.vocab_size, (batch, prompt_len), generator=gen).tolist()
        result.speculation = bench_speculation(engine, prompts, decode, draft_tokens)
    if resident:  # the same steps with every expert resident
        del engine
        torch.cuda.empty_cache()
        stages("the all-resident plan, for its decode step time")
        plan.offload = {}
        engine = Engine(
            plan, as_stored(needed, plan.params), device=device, dtype=dtype, backend=backend,
            cuda_graphs=cuda_graphs and comm is None, comm=comm,
        )  # fmt: skip
        alone = bench_engine(engine, spec, batch=batch, prompt_len=prompt_len, decode=decode,
                             repeat=repeat, stage=stages)  # fmt: skip
        result.experts["resident_decode_ms_per_token"] = alone.decode_ms_per_token
    if compare == "hf":
        del engine
        from v4c.bench_compare import bench_hf

        stages("transformers (eager) on the same weights")
        result.hf = bench_hf(
            spec, weights, device, dtype, batch=batch, prompt_len=prompt_len, decode=decode
        )
    stages.end()
    return result


def bench_seq(prompt_len: int, decode: int, speculative: str) -> int:
    """The longest sequence a bench holds: the prompt, the decode step after it and the
    timed ones, one more, and with the MTP block (`speculative="mtp"`) its drafts."""
    return prompt_len + decode + 2 + (CompileOptions.max_draft if speculative == "mtp" else 0)


def check_memory(
    spec: ModelSpec, device, dtype, *, prompt_len: int, decode: int, batch: int,
    speculative: str, ranks: int, device_gb: float | None = None,
) -> None:  # fmt: skip
    """Refuse, before anything is made, a bench whose caches (`batch` sequences of
    `bench_seq` tokens) do not fit the device (within the budget `device_gb`, when the bench
    runs only the offloaded plan): the rule of `v4c run`'s --max-seq, said in bench's
    options. The CLI asks before making the weights, `run_bench` again."""
    from v4c.errors import V4CError
    from v4c.limits import choose_max_seq

    what = f"--prompt-len {prompt_len} with --decode {decode}"
    what += f" and --batch {batch}" if batch > 1 else ""
    try:
        tokens = bench_seq(prompt_len, decode, speculative)
        choose_max_seq(spec, str(device), dtype, tokens, ranks, batch, device_gb)
    except V4CError as err:
        raise V4CError(f"{what}: {str(err).removeprefix('--max-seq: ')}") from None
