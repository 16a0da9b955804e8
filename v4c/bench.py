"""`v4c bench`: the speed of a compiled plan, measured, with the baselines in the same run.

Per entry point it reports launches per step, host time per step and per launch, prefill
tokens/s, decode ms/token and tokens/s, the bytes the plan reads per decode token and the
bandwidth that achieves, against the device's own copy bandwidth measured in the same
process. `compare="hf"` runs transformers' `DeepseekV4ForCausalLM` (eager) on the same
weights and reports both and the ratio. Speed is measured here, never in unit tests.

With speculation (`speculative="mtp"`) it also generates greedily `decode` tokens after the
prompts three ways, each after a warm-up run: plainly, with the MTP block drafting K tokens,
and with the perfect drafter (the plain run's own tokens as drafts, so every draft is
accepted: what verification costs when drafting is free) for K = 1, 2, 3; it reports
tokens/s, the acceptance rate and the tokens per main-model step of each, and the ratios to
the plain run. Random weights accept almost no MTP draft; the perfect drafter shows the
mechanism's speed.

Host time: on CUDA, the wall time to enqueue one step's launches (no synchronisation) and
the step's device time (synchronised); on CPU, where the host runs the kernels too, the
step's wall time minus the time spent inside its calls, i.e. the program's own dispatch.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from v4c.compile import compile_spec
from v4c.ir.types import ir_dtype
from v4c.passes.base import CompileOptions
from v4c.report import decode_read_bytes
from v4c.runtime.engine import Engine
from v4c.runtime.program import Step
from v4c.spec import ModelSpec


@dataclass
class BenchResult:
    spec: str
    device: str
    backend: str
    dtype: str
    weights: str
    batch: int
    prompt_len: int
    decode_steps: int
    launches: dict[str, int] = field(default_factory=dict)  # per step, by entry
    host_ms_per_step: dict[str, float] = field(default_factory=dict)
    host_us_per_launch: dict[str, float] = field(default_factory=dict)
    prefill_tokens_per_s: float = 0.0
    decode_ms_per_token: float = 0.0
    decode_tokens_per_s: float = 0.0
    bytes_per_decode_token: int = 0
    achieved_gb_per_s: float = 0.0
    copy_gb_per_s: float = 0.0
    bandwidth_fraction: float = 0.0
    repeat: int = 1  # timed runs of the prefill and of the decode steps; figures are medians
    runs: dict[str, list[float]] = field(default_factory=dict)  # figure -> each run's value
    hf: dict[str, float] = field(default_factory=dict)  # the same figures for transformers
    speculation: dict[str, dict] = field(default_factory=dict)  # mode -> figures (see above)
    experts: dict[str, float] = field(default_factory=dict)  # offload: per decode token

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeat: int = 1) -> float:
    """Seconds per call of `fn`, the device synchronised around the calls."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeat


def copy_bandwidth(device: torch.device, mib: int = 256) -> float:
    """GB/s of a device-to-device copy (bytes read + written), the roofline's reference."""
    src = torch.empty(mib << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm up
    seconds = _timed(lambda: dst.copy_(src), device, repeat=10)
    return 2 * src.numel() / seconds / 1e9


def host_overhead(step: Step, device: torch.device, repeat: int = 5) -> float:
    """Seconds of host time per step that are the program's own (see the module doc)."""
    if device.type == "cuda":
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeat):
            step.run()  # enqueue only
        enqueue = (time.perf_counter() - start) / repeat
        _sync(device)
        return enqueue
    whole = min(_timed(step.run, device) for _ in range(repeat))
    inside = []
    for _ in range(repeat):
        total = 0.0
        for call in step.calls:
            start = time.perf_counter()
            call()
            total += time.perf_counter() - start
        inside.append(total)
    return max(whole - min(inside), 0.0)  # the fastest of each, so noise does not count


def bench_engine(
    engine: Engine,
    spec: ModelSpec,
    *,
    batch: int,
    prompt_len: int,
    decode: int,
    seed: int = 0,
    repeat: int = 1,
    log=lambda _: None,
) -> BenchResult:
    """Prefill `batch` prompts of `prompt_len` random tokens, then `decode` steps; each
    timed `repeat` times (the figures are the medians, `runs` holds every run's)."""
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, spec.vocab_size, (batch, prompt_len), generator=gen).tolist()
    device = engine.device
    result = BenchResult(
        spec.name, str(device), engine.programs["decode"].backend, str(engine.dtype),
        engine.plan.options["weights"], batch, prompt_len, decode,
    )  # fmt: skip

    def prefill() -> torch.Tensor:
        engine.reset(batch)
        return engine.forward(prompts)

    log("warming up: binding the steps, loading the kernels")
    logits = prefill()
    tokens = [[int(t)] for t in logits.argmax(-1).tolist()]
    engine.forward(tokens)  # the first decode step (on CUDA: the CUDA graph is captured)
    prefills, decodes = [], []  # tokens/s; seconds per step, the mean over `decode` steps
    for i in range(repeat):  # each run from the same state: the prompt, then the steps
        log(f"run {i + 1}/{repeat}: prefill {batch} x {prompt_len} tokens, {decode} decode steps")
        prefills.append(batch * prompt_len / _timed(prefill, device))
        engine.forward(tokens)  # the step after the prompt, as in the warm-up
        before = _expert_counts(engine)
        decodes.append(_timed(lambda: engine.forward(tokens), device, repeat=decode))
        if engine.offload:  # the last run's expert reads per decode token
            diff = [b - a for a, b in zip(before, _expert_counts(engine))]
            names = ("hit_on_device", "read_from_host", "host_link_bytes")
            result.experts = {k: v / (decode * batch) for k, v in zip(names, diff)}
    seconds = statistics.median(decodes)
    result.repeat = repeat
    result.runs = {
        "prefill_tokens_per_s": prefills,
        "decode_tokens_per_s": [batch / s for s in decodes],
    }
    result.prefill_tokens_per_s = statistics.median(prefills)
    result.decode_ms_per_token = seconds * 1e3
    result.decode_tokens_per_s = batch / seconds
    log("host time per step, copy bandwidth")
    for entry, tokens_per_row in (("prefill", min(prompt_len, engine.max_tokens)), ("decode", 1)):
        step = engine.programs[entry].bind(batch, tokens_per_row)
        # valid inputs for re-running the step: the prompt's first tokens at positions 0..
        start = 0 if entry == "prefill" else prompt_len
        step.inputs["ids"].copy_(torch.tensor(prompts)[:, :tokens_per_row])
        step.inputs["positions"].copy_(start + torch.arange(tokens_per_row).expand(batch, -1))
        host = host_overhead(step, device)
        result.launches[entry] = step.launches
        result.host_ms_per_step[entry] = host * 1e3
        result.host_us_per_launch[entry] = host / max(step.launches, 1) * 1e6
    read, _ = decode_read_bytes(spec)
    result.bytes_per_decode_token = sum(read.values())
    result.achieved_gb_per_s = result.bytes_per_decode_token / seconds / 1e9
    result.copy_gb_per_s = copy_bandwidth(device, 256 if device.type == "cuda" else 64)
    result.bandwidth_fraction = result.achieved_gb_per_s / result.copy_gb_per_s
    return result


def _expert_counts(engine: Engine) -> tuple[int, int, int]:
    """Offload counters summed over layers: picks hit on the device, picks read from host
    memory, bytes fetched over the host link (one read, after the steps)."""
    hits = misses = fetched = 0
    for store in engine.offload.values():
        h, m, f = store.counts.tolist()
        hits, misses, fetched = hits + h, misses + m, fetched + f * store.expert_bytes
    return hits, misses, fetched


def bench_speculation(engine: Engine, prompts: list[list[int]], new: int, k: int) -> dict:
    """Greedy generation of `new` tokens: plain, MTP with `k` drafts, perfect K = 1..3."""
    from v4c.runtime.drafting import MtpDrafter
    from v4c.runtime.generate import generate
    from v4c.runtime.sampler import Sampler

    sampler = Sampler()

    def run(k=0, oracle=None):
        figures = {}
        for _ in range(2):  # the first binds the steps of every length (and captures graphs)
            drafter = MtpDrafter(engine, sampler, k, oracle) if k else None
            out = generate(engine, prompts, sampler, max_new_tokens=new, stop_ids=set(),
                           drafter=drafter)  # fmt: skip
            figures = {"tokens_per_s": out.tokens_per_s, "draft_tokens": k}
            if drafter is not None:
                stats = drafter.stats
                figures.update(acceptance=stats.acceptance, tokens_per_step=stats.tokens_per_step)
        return figures, out.tokens

    plain, tokens = run()
    modes = {"off": plain, "mtp": run(k)[0]}
    limit = engine.plan.options["max_draft"]
    for j in range(1, min(3, limit) + 1):
        modes[f"perfect_k{j}"] = run(j, tokens)[0]
    for figures in modes.values():
        figures["speedup"] = figures["tokens_per_s"] / plain["tokens_per_s"]
    return modes


def bench_hf(spec: ModelSpec, weights: dict, device, dtype, *, batch, prompt_len, decode) -> dict:
    """transformers' DeepseekV4ForCausalLM, eager, on the same (dense) weights."""
    model = hf_model(spec, weights, device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, spec.vocab_size, (batch, prompt_len), generator=gen).to(device)
    with torch.no_grad():
        model(ids)  # warm up
        seconds = _timed(lambda: model(ids, use_cache=True), device)
        out = model(ids, use_cache=True)
        # transformers renamed past_key_values to cache (5.2x); the GPU machine has 5.17
        key = "cache" if hasattr(out, "cache") else "past_key_values"
        cache, token = getattr(out, key), out.logits[:, -1:].argmax(-1)

        def step():
            nonlocal cache
            cache = getattr(model(token, **{key: cache}, use_cache=True), key)

        step()
        per_token = _timed(step, device, repeat=decode)
    return {
        "prefill_tokens_per_s": batch * prompt_len / seconds,
        "decode_ms_per_token": per_token * 1e3,
        "decode_tokens_per_s": batch / per_token,
    }


def hf_model(spec: ModelSpec, weights: dict, *, device, dtype):
    """transformers' model of `spec` holding `weights` (official names, dense), in memory."""
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    from v4c.runtime.checkpoint.hf import hf_units
    from v4c.spec.config_io import spec_to_config

    with torch.device(device):
        model = DeepseekV4ForCausalLM(DeepseekV4Config(**spec_to_config(spec, "hf"))).to(dtype)
    state = {}
    for unit in hf_units(spec, dtype):
        stored = unit.encode([weights[t.name] for t in unit.logical])
        state.update((s.name, x) for s, x in zip(unit.stored, stored))
    model.load_state_dict(state, strict=True)
    return model.eval()


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
        max_batch=batch, max_tokens=steps, max_seq=prompt_len + decode + 2 + drafts,
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
    log=lambda _: None,
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
    `record`: write the routing profile of the run there."""
    from v4c.runtime.checkpoint.pieces import rank_weights
    from v4c.runtime.checkpoint.random_weights import as_stored

    device = torch.device(device)
    grid = (comm.grid.tp, comm.grid.ep) if comm is not None else (1, 1)
    drafts = CompileOptions.max_draft if speculative == "mtp" else 0
    check_memory(
        spec, device, dtype, prompt_len + decode + 2 + drafts, grid[0] * grid[1],
        f"--prompt-len {prompt_len} with --decode {decode}",
    )  # fmt: skip
    log(f"compiling {spec.name} for batch {batch}, {prompt_len + decode + 2 + drafts} tokens")
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
        engine, spec, batch=batch, prompt_len=prompt_len, decode=decode, repeat=repeat, log=log
    )
    if picks is not None:
        from v4c.cli.experts import save_profile

        save_profile(record, spec.name, picks)
    if speculative == "mtp":
        log("greedy generation: speculation off, with the MTP block, with a perfect drafter")
        gen = torch.Generator().manual_seed(1)
        prompts = torch.randint(0, spec.vocab_size, (batch, prompt_len), generator=gen).tolist()
        result.speculation = bench_speculation(engine, prompts, decode, draft_tokens)
    if engine.offload and device.type == "cuda":  # the same steps with every expert resident
        del engine
        torch.cuda.empty_cache()
        log("the all-resident plan, for its decode step time")
        plan.offload = {}
        resident = Engine(
            plan, as_stored(needed, plan.params), device=device, dtype=dtype, backend=backend,
            cuda_graphs=cuda_graphs and comm is None, comm=comm,
        )  # fmt: skip
        alone = bench_engine(resident, spec, batch=batch, prompt_len=prompt_len, decode=decode,
                             repeat=repeat, log=log)  # fmt: skip
        result.experts["resident_decode_ms_per_token"] = alone.decode_ms_per_token
        engine = resident
    if compare == "hf":
        del engine
        log("transformers (eager) on the same weights")
        result.hf = bench_hf(
            spec, weights, device, dtype, batch=batch, prompt_len=prompt_len, decode=decode
        )
    return result


def check_memory(spec: ModelSpec, device, dtype, tokens: int, ranks: int, what: str) -> None:
    """Refuse, before anything is made, a run whose caches do not fit the device (the rule
    of `v4c run`'s --max-seq, said in the options of the caller)."""
    from v4c.errors import V4CError
    from v4c.limits import choose_max_seq

    try:
        choose_max_seq(spec, str(device), dtype, tokens, ranks)
    except V4CError as err:
        raise V4CError(f"{what}: {str(err).removeprefix('--max-seq: ')}") from None


def format_result(r: BenchResult) -> list[str]:
    """The lines `v4c bench` prints."""
    lines = [
        f"{r.spec} on {r.device}: backend {r.backend}, activations {r.dtype}, weights "
        f"{r.weights}, batch {r.batch}, prompt {r.prompt_len}, {r.decode_steps} decode steps",
    ]
    for entry in ("prefill", "decode"):
        lines.append(
            f"  {entry:<8} {r.launches[entry]:>5} launches/step, host "
            f"{r.host_ms_per_step[entry]:.3f} ms/step = {r.host_us_per_launch[entry]:.2f} us/launch"
        )
    lines += [
        f"  prefill  {r.prefill_tokens_per_s:,.1f} tokens/s{_spread(r, 'prefill_tokens_per_s')}",
        f"  decode   {r.decode_ms_per_token:.3f} ms/step, {r.decode_tokens_per_s:,.1f} tokens/s"
        f"{_spread(r, 'decode_tokens_per_s')}",
        f"  reads    {r.bytes_per_decode_token / 1e9:.3f} GB per decode token: "
        f"{r.achieved_gb_per_s:.1f} GB/s = {100 * r.bandwidth_fraction:.1f} % of the "
        f"measured copy bandwidth ({r.copy_gb_per_s:.1f} GB/s)",
    ]
    if r.experts:
        e = r.experts
        lines.append(
            f"  experts  per decode token: {e['hit_on_device']:.1f} picks hit on the device, "
            f"{e['read_from_host']:.1f} read from host memory, "
            f"{e['host_link_bytes'] / 2**20:.2f} MiB over the host link"
        )
        if "resident_decode_ms_per_token" in e:
            alone = e["resident_decode_ms_per_token"]
            lines.append(
                f"  resident {alone:.3f} ms/step with every expert on the device: offload "
                f"costs {r.decode_ms_per_token - alone:+.3f} ms/step"
            )
    for mode, f in r.speculation.items():
        rate = (
            f", {100 * f['acceptance']:.0f} % accepted, {f['tokens_per_step']:.2f} tokens/step"
            if "acceptance" in f
            else ""
        )
        k = f" K={f['draft_tokens']}" if f["draft_tokens"] else ""
        lines.append(
            f"  greedy {mode:<10}{k:<5} {f['tokens_per_s']:,.1f} tokens/s "
            f"({f['speedup']:.2f}x off){rate}"
        )
    if r.hf:
        lines += [
            f"  transformers (eager): prefill {r.hf['prefill_tokens_per_s']:,.1f} tokens/s, "
            f"decode {r.hf['decode_ms_per_token']:.3f} ms/step",
            f"  ratio v4c / transformers: prefill "
            f"{r.prefill_tokens_per_s / r.hf['prefill_tokens_per_s']:.2f}x, decode "
            f"{r.hf['decode_ms_per_token'] / r.decode_ms_per_token:.2f}x",
        ]
    lines.append(
        f"decode speed: {r.decode_tokens_per_s:,.1f} tokens/s (batch {r.batch}, after a "
        f"{r.prompt_len}-token prompt; median of {r.repeat} run{'s' * (r.repeat > 1)} of "
        f"{r.decode_steps} steps)"
    )
    return lines


def _spread(r: BenchResult, figure: str) -> str:
    """`(median of N: min a, max b)` over the timed runs of a figure, empty for one run."""
    runs = r.runs.get(figure, [])
    if len(runs) < 2:
        return ""
    return f" (median of {len(runs)}: min {min(runs):,.1f}, max {max(runs):,.1f})"


def write_json(result: BenchResult, path: Path) -> None:
    import json

    path.write_text(json.dumps(result.to_dict(), indent=1, sort_keys=True) + "\n")
