"""Per-kernel time, bytes moved and FLOPs of one compiled plan at its decode and prefill shapes
(stage 2 of `bench/gpu_check.sh`):

    python bench/kernels.py --spec variants/flash-2l-slice --weights as-stored --prompt-len 2048 \\
        --json kernels.json
    python bench/kernels.py --spec tiny --device cpu --prompt-len 16 --json kernels.json

It compiles the spec for batch 1, binds it with random weights (made on the device and
quantised to the plan's formats there), prefills `--prompt-len` tokens so that
the caches are full, then times every bound call of the decode step (T = 1) and of the
prefill step (T = prompt length), in launch order (the plan's launches minus the `view` ones,
which binding evaluates away).

Timing: on CUDA each call sits between two CUDA events inside one step; a sleep kernel
queued first keeps the GPU busy while the host enqueues the step, so an interval is the
kernel's own device time and not the host's launch latency, and the L2 cache is flushed
before each repetition. On CPU, each call's wall time. The median over `--repeat` steps.

Bytes: the operands and results of a launch as the plan's refs give them, resolved at
(B, T): arena values and step inputs at their shapes, weights as bound on the device (FP8/FP4
ones with their scales), of which a step of n tokens reads n times one token's share, at
most all (`token_share`: top_k experts per token, one embedding row per token), caches as
read in full (their in-place updates are not counted again).

FLOPs: 2 per weight element per token it multiplies (every 2-D weight but a gathered table
is a matrix the launch applies); attention's own score and value products are not counted,
so its TFLOP/s is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from fractions import Fraction
from math import prod
from pathlib import Path

import torch

from v4c.ir.types import ir_dtype
from v4c.spec.params import active_share

# H200 SXM, dense (no sparsity): NVIDIA's H200 datasheet gives 1,979 TFLOP/s BF16 and 3,958
# FP8 "with sparsity"; the dense figures are half of those.
PEAK_TFLOPS = {"bf16": 989.0, "fp8": 1979.0}
PEAK_SOURCE = "NVIDIA H200 SXM datasheet: 1,979 BF16 / 3,958 FP8 TFLOP/s with sparsity, halved"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default="variants/flash-2l-slice", help="a spec file or name")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if any)")
    p.add_argument("--backend", default="", help="torch or triton (default: triton on CUDA)")
    p.add_argument("--weights", default="as-stored", choices=("as-stored", "bf16"))
    p.add_argument("--prompt-len", type=int, default=2048, help="the prefill step's tokens")
    p.add_argument("--repeat", type=int, default=5, help="timed steps per entry")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    return p.parse_args(argv)


def plan_for(spec, prompt_len: int, weights: str, dtype: torch.dtype):
    """The plan this stage times: batch 1 at this prompt length (bench/estimate.py too)."""
    from v4c.compile import compile_spec
    from v4c.passes.base import CompileOptions

    options = CompileOptions(
        max_batch=1, max_tokens=prompt_len, max_seq=prompt_len + 2, weights=weights,
        dtype=ir_dtype(str(dtype)),
    )  # fmt: skip
    return compile_spec(spec, options).plan


def build_engine(spec, args, device: torch.device, dtype: torch.dtype):
    """The plan for batch 1 at this prompt length, bound to random weights on `device`."""
    from v4c.runtime.engine import Engine
    from v4c.runtime.checkpoint.random_weights import as_stored, random_weights

    plan = plan_for(spec, args.prompt_len, args.weights, dtype)
    dense = random_weights(spec, seed=args.seed, dtype=dtype, device=str(device))
    placed = {name: dense[name] for name in plan.params}
    backend = args.backend or ("triton" if device.type == "cuda" else "torch")
    return Engine(
        plan, as_stored(placed, plan.params), device=device, dtype=dtype, backend=backend,
        cuda_graphs=False,
    )  # fmt: skip


def _nbytes(weight) -> int:
    from v4c.ir.semantics.quant import QuantWeight

    if isinstance(weight, QuantWeight):
        return weight.data.nbytes + weight.scale.nbytes
    return weight.nbytes


def launch_cost(launch, engine, spec, env: dict[str, int]) -> tuple[int, int]:
    """(bytes moved, weight FLOPs) of one launch at the step dims `env` (see the module doc)."""
    from v4c.ir.types import resolve_dim
    from v4c.ir.types import torch_dtype
    from v4c.spec.tensors import checkpoint_tensors

    infos = {t.name: t for t in checkpoint_tensors(spec)}
    tokens = env["B"] * env["T"]
    moved = flops = 0
    for ref in launch.inputs:
        if ref.kind == "param":
            info = infos[ref.name]
            share = active_share(info, spec)
            moved += int(_nbytes(engine.params[ref.name]) * min(Fraction(1), tokens * share))
            if len(info.shape) == 2 and info.part not in ("embedding", "tables"):  # a matrix
                flops += int(2 * tokens * prod(info.shape) * max(info.stack, 1) * share)
        elif ref.kind == "state":
            moved += engine.state[ref.name].nbytes
    for ref in launch.inputs + launch.outputs:
        if ref.kind not in ("param", "state"):
            n = prod(resolve_dim(d, env) for d in ref.dims)
            moved += n * torch_dtype(ref.dtype, engine.dtype).itemsize
    return moved, flops


def _baselines():
    """bench/gemm_baselines.py, loaded by its path (bench/ is not a package)."""
    import importlib.util

    path = Path(__file__).with_name("gemm_baselines.py")
    spec = importlib.util.spec_from_file_location("gemm_baselines", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time_calls_cpu(calls: list[Callable], repeat: int) -> list[list[float]]:
    """Seconds of each call, per repetition."""
    runs = []
    for _ in range(repeat):
        times = []
        for call in calls:
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        runs.append(times)
    return runs


def _time_calls_cuda(calls: list[Callable], repeat: int, device) -> list[list[float]]:
    """Seconds of each call between CUDA events, per repetition (see the module doc)."""
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=device)  # > the 50 MB L2
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for call in calls:
        call()
    enqueue = time.perf_counter() - start  # host time to queue one step
    torch.cuda.synchronize(device)
    runs = []
    for _ in range(repeat):
        events = [torch.cuda.Event(enable_timing=True) for _ in range(len(calls) + 1)]
        flush.zero_()
        torch.cuda._sleep(int(3 * enqueue * 2e9))  # cycles at ~2 GHz: 3x the enqueue time
        events[0].record()
        for call, after in zip(calls, events[1:]):
            call()
            after.record()
        torch.cuda.synchronize(device)
        runs.append([a.elapsed_time(b) / 1e3 for a, b in zip(events, events[1:])])
    return runs


def time_entry(engine, spec, entry: str, tokens: int, start: int, prompt, repeat: int) -> dict:
    """Every bound call of `entry` at (1, tokens), timed, with its bytes and FLOPs."""
    program = engine.programs[entry]
    step = program.bind(1, tokens)
    step.inputs["ids"].copy_(torch.tensor(prompt[:tokens])[None])
    step.inputs["positions"].copy_(start + torch.arange(tokens)[None])
    step.run()  # warm up (on the triton backend the kernels compile on their first call)
    device = engine.device
    if device.type == "cuda":
        runs = _time_calls_cuda(step.calls, repeat, device)
    else:
        runs = _time_calls_cpu(step.calls, repeat)
    launches = [launch for launch in program.entry.launches if launch.kind != "view"]
    assert len(launches) == len(step.calls), "a bound call per non-view launch"
    env = {**program.entry.env, "B": 1, "T": tokens}
    baselines = {}
    if entry == "decode":  # each dense GEMM beside torch.mm / torch._scaled_mm
        timer = (lambda calls, n: _time_calls_cuda(calls, n, device)) if device.type == "cuda" \
            else _time_calls_cpu  # fmt: skip
        baselines = _baselines().time_baselines(program, launches, env, repeat, timer)
    rows = []
    for i, launch in enumerate(launches):
        seconds = statistics.median(run[i] for run in runs)
        moved, flops = launch_cost(launch, engine, spec, env)
        rows.append(
            {"node": launch.node, "kind": launch.kind, "kernel": launch.kernel, "op": launch.op,
             "seconds": seconds, "bytes": moved, "flops": flops, **baselines.get(i, {})}
        )  # fmt: skip
    step_seconds = statistics.median(sum(run) for run in runs)
    return {"tokens": tokens, "step_seconds": step_seconds, "launches": rows}


def by_kernel(rows: list[dict], copy_gb_per_s: float, peak_tflops: float) -> list[dict]:
    """The launches summed per (kind, kernel), the slowest first, with their rates."""
    groups: dict[tuple[str, str], dict] = {}
    for row in rows:
        g = groups.setdefault(
            (row["kind"], row["kernel"]),
            {"kind": row["kind"], "kernel": row["kernel"], "launches": 0, "seconds": 0.0,
             "bytes": 0, "flops": 0},
        )  # fmt: skip
        g["launches"] += 1
        for key in ("seconds", "bytes", "flops"):
            g[key] += row[key]
    out = sorted(groups.values(), key=lambda g: -g["seconds"])
    for g in out:
        seconds = max(g["seconds"], 1e-12)
        g["gb_per_s"] = g["bytes"] / seconds / 1e9
        g["tflops"] = g["flops"] / seconds / 1e12
        g["bandwidth_fraction"] = g["gb_per_s"] / copy_gb_per_s
        g["peak_fraction"] = g["tflops"] / peak_tflops
    return out


def measure(args: argparse.Namespace) -> dict:
    from v4c.bench_measure import copy_bandwidth
    from v4c.spec import load_spec

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    spec = load_spec(args.spec)
    engine = build_engine(spec, args, device, dtype)
    gen = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, spec.vocab_size, (args.prompt_len,), generator=gen).tolist()
    engine.reset(1)
    engine.forward([prompt])  # the caches hold the whole prompt for the decode step
    copy = copy_bandwidth(device, 256 if device.type == "cuda" else 64)
    peak = PEAK_TFLOPS["bf16"]
    entries = {}
    for entry, tokens, start in (("decode", 1, args.prompt_len), ("prefill", args.prompt_len, 0)):
        timed = time_entry(engine, spec, entry, tokens, start, prompt, args.repeat)
        timed["by_kernel"] = by_kernel(timed["launches"], copy, peak)
        entries[entry] = timed
    return {
        "spec": spec.name, "device": torch.cuda.get_device_name(device)
        if device.type == "cuda" else "cpu", "backend": engine.programs["decode"].backend,
        "dtype": str(dtype), "weights": args.weights, "prompt_len": args.prompt_len,
        "repeat": args.repeat, "copy_gb_per_s": copy, "peak_tflops": PEAK_TFLOPS,
        "peak_source": PEAK_SOURCE, "entries": entries,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    figures = measure(args)
    for entry, timed in figures["entries"].items():
        print(f"{entry}: {timed['step_seconds'] * 1e3:.3f} ms in {len(timed['launches'])} calls")
        for g in timed["by_kernel"]:
            print(
                f"  {g['kernel']:<22} x{g['launches']:<3} {g['seconds'] * 1e3:9.3f} ms "
                f"{g['gb_per_s']:9.1f} GB/s ({100 * g['bandwidth_fraction']:5.1f} %) "
                f"{g['tflops']:8.2f} TFLOP/s ({100 * g['peak_fraction']:5.1f} %)"
            )
        for row in timed["launches"]:
            if "torch_mm_seconds" in row:
                libs = "".join(
                    f"  {name} {row[key] * 1e6:8.1f} us ({row[key] / row['seconds']:4.2f}x)"
                    for name, key in (("torch.mm", "torch_mm_seconds"),
                                      ("_scaled_mm", "scaled_mm_seconds")) if key in row
                )  # fmt: skip
                print(f"  {row['node']:<34} v4c {row['seconds'] * 1e6:8.1f} us{libs}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    return figures


if __name__ == "__main__":
    main()
