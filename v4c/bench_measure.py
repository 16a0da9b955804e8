"""How `v4c bench` times a bound engine: the prefill and decode steps, each step's host
time, and the device's copy bandwidth (the roofline's reference), in the same process.

Host time: on CUDA, the wall time to enqueue one step's launches (no synchronisation) and
the step's device time (synchronised); on CPU, where the host runs the kernels too, the
step's wall time minus the time spent inside its calls, i.e. the program's own dispatch.
Nothing reports progress inside a timed region: a stage is said between them.
"""

from __future__ import annotations

import statistics
import time

import torch

from v4c.bench_report import BenchResult
from v4c.report import decode_read_bytes
from v4c.runtime.engine import Engine
from v4c.runtime.program import Step
from v4c.spec import ModelSpec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int = 1) -> float:
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
    seconds = timed(lambda: dst.copy_(src), device, repeat=10)
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
    whole = min(timed(step.run, device) for _ in range(repeat))
    inside = []
    for _ in range(repeat):
        total = 0.0
        for call in step.calls:
            start = time.perf_counter()
            call()
            total += time.perf_counter() - start
        inside.append(total)
    return max(whole - min(inside), 0.0)  # the fastest of each, so noise does not count


class Stages:
    """The stages of one bench, counted as each starts: `progress(description, done, total)`
    (the CLI's bar, or its lines)."""

    def __init__(self, total: int, progress):
        self.total, self.done, self._progress = total, 0, progress

    def __call__(self, description: str) -> None:
        self._progress(description, self.done, self.total)
        self.done += 1

    def end(self) -> None:
        self._progress("done", self.total, self.total)


def engine_stages(repeat: int) -> int:
    """The stages `bench_engine` says: the warm-up, each timed run, the host time."""
    return repeat + 2


def bench_engine(
    engine: Engine,
    spec: ModelSpec,
    *,
    batch: int,
    prompt_len: int,
    decode: int,
    seed: int = 0,
    repeat: int = 1,
    stage=lambda description: None,
) -> BenchResult:
    """Prefill `batch` prompts of `prompt_len` random tokens, then `decode` steps; each
    timed `repeat` times (the figures are the medians, `runs` holds every run's). `stage` is
    told each of its `engine_stages(repeat)` stages as it starts."""
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

    stage("warming up: binding the steps, loading the kernels")
    logits = prefill()
    tokens = [[int(t)] for t in logits.argmax(-1).tolist()]
    engine.forward(tokens)  # the first decode step (on CUDA: the CUDA graph is captured)
    prefills, decodes = [], []  # tokens/s; seconds per step, the mean over `decode` steps
    for i in range(repeat):  # each run from the same state: the prompt, then the steps
        stage(f"run {i + 1}/{repeat}: prefill {batch} x {prompt_len} tokens, {decode} decode steps")
        prefills.append(batch * prompt_len / timed(prefill, device))
        engine.forward(tokens)  # the step after the prompt, as in the warm-up
        before = _expert_counts(engine)
        decodes.append(timed(lambda: engine.forward(tokens), device, repeat=decode))
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
    stage("host time per step, copy bandwidth")
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
