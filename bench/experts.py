"""Stage `experts` of `bench/gpu_check.sh`: the routed experts of one Flash layer (the
`grouped_swiglu` template, FP4 weights) at decode and prefill, measured beside the kernel
lens's ESTIMATE of the same launches (codegen/cost.py on their sm_90 build) and beside a torch
bf16 grouped baseline on the same weights dequantised:

    python bench/experts.py --tokens 1 1024 2048 --json OUT/experts.json
    env -u TRITON_INTERPRET python bench/experts.py --estimate-only --tokens 1 --json e.json

A step of T tokens routes each token to K of E experts drawn uniformly (balanced loads; the
grouped grid's spare tiles exit at once). The v4c call is the template's `run` (both GEMMs,
SwiGLU, routing weight), timed between CUDA events after an L2 flush, the median of
`--repeat`. The baseline gathers x by slot, runs torch._grouped_mm (torch.mm per expert where
it is missing) for w1, w3, the clamped SwiGLU times the routing weight, then w2, in bf16; its
result is compared with v4c's (max relative difference, reported: both are bf16 GEMMs of the
same exact weights, so they differ by the bf16 roundings of h and y, ~1e-2 at most).
--estimate-only builds and estimates on `meta` tensors with no GPU (what BENCHMARKS.md quotes).

Estimate bytes and FLOPs follow the cost model's rule for this launch: the weights of
min(E, T K) experts as stored (FP4 half a byte and an E8M0 byte per 32), x, the sort and the
routing weights, y; 2 FLOPs per weight element per routed row; shared among the template's
kernels as the lens shares them (bytes of their tensor arguments).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path

import torch

from v4c.codegen import aot, cost, jit
from v4c.codegen.params import describe
from v4c.codegen.targets import target
from v4c.ir.ops.moe import GroupedSwiglu, MoeSort
from v4c.ir.semantics.quant import QuantWeight, fp4_dequantize
from v4c.ir.weights import WeightFormat

ROOT = Path(__file__).resolve().parents[1]
D, I, E, K, LIMIT = 4096, 2048, 256, 6, 10.0  # Flash (specs/flash.yaml)
FP4 = WeightFormat.fp4(32)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 1024, 2048])
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--estimate-only", action="store_true", help="no GPU: the lens's figures")
    p.add_argument("--target", default="sm_90")
    p.add_argument("--cache", type=Path, default=ROOT / "build" / "experts-cache",
                   help="rendered kernels and the sm_90 build facts")  # fmt: skip
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def expert_weights(device, gen) -> list[QuantWeight]:
    """w1, w2, w3 of E experts in FP4: uniform codes, scale bytes 118..125 (2^-9..2^-2)."""
    out = []
    for rows, cols in ((I, D), (D, I), (I, D)):
        if device.type == "meta":
            data = torch.empty(E, rows, cols // 2, dtype=torch.int8, device=device)
            scale = torch.empty(E, rows, cols // 32, dtype=torch.uint8, device=device)
        else:
            data = torch.randint(-128, 128, (E, rows, cols // 2), generator=gen,
                                 dtype=torch.int8, device=device)  # fmt: skip
            scale = torch.randint(118, 126, (E, rows, cols // 32), generator=gen,
                                  dtype=torch.uint8, device=device)  # fmt: skip
        out.append(QuantWeight(data, scale.view(torch.float8_e8m0fnu), FP4))
    return out


def step_inputs(t: int, ws: list[QuantWeight], device, gen) -> list:
    """[x, order, offsets, weights, w1, w2, w3] of a step of t tokens."""
    if device.type == "meta":
        slots = torch.empty(1, t, K, dtype=torch.int64, device=device)
        offsets = torch.empty(E + 1, dtype=torch.int64, device=device)
        x = torch.empty(1, t, D, dtype=torch.bfloat16, device=device)
        return [x, slots, offsets, slots.float(), *ws]
    x = torch.randn(1, t, D, generator=gen, device=device).to(torch.bfloat16)
    idx = torch.rand(1, t, E, generator=gen, device=device).topk(K, dim=-1).indices
    order, offsets = MoeSort(num_experts=E).run([idx])
    weights = torch.rand(1, t, K, generator=gen, device=device) + 0.5
    return [x, order, offsets, weights, *ws]


def v4c_call(ins: list, root: Path):
    op = GroupedSwiglu(limit=LIMIT)
    module = jit.load(jit.params_for(op.kind, op.attrs(), [describe(t) for t in ins]), root)
    out = (torch.empty((*ins[1].shape, D), dtype=ins[0].dtype, device=ins[0].device),)
    return lambda: module.run(*ins, out=out), out[0]


def estimate(ins: list, call, target_name: str, root: Path) -> dict:
    """The lens's estimate of the call's kernels (µs each, and their sum) on the target."""
    tgt = target(target_name)
    t = ins[0].shape[1]
    touched = min(E, t * K)
    nbytes = 3 * touched * I * D * cost.format_bytes(FP4, "bf16")
    nbytes += t * D * 2 + t * K * (8 + 4) + (E + 1) * 8 + t * K * D * 2  # x, sort, y
    flops = 2 * t * K * 3 * I * D
    with aot.recording() as seen:
        call()
    raw = [sum(v.numel() * v.element_size() for v in c.args.values() if torch.is_tensor(v))
           for c in seen]  # fmt: skip
    out = {}
    for c, kb, kf in zip(seen, cost.split(nbytes, raw), cost.split(flops, raw)):
        facts = aot.cached_facts(c, tgt, root)
        ctas = c.grid[0] * c.grid[1] * c.grid[2]
        est = cost.estimate(tgt.card, kb, kf, ctas, facts)
        row = {"ctas": ctas, "loads": facts["loads"], "flags": est["flags"]}
        out[c.fn.__name__] = row | {k: est[k] for k in ("est_us", "roofline_us")}
    out["total"] = {k: sum(v[k] for v in out.values()) for k in ("est_us", "roofline_us")}
    return out


def dequantized(ws: list[QuantWeight]) -> list[torch.Tensor]:
    """w1, w2, w3 in bf16 [E, out, in], dequantised an expert at a time (the reference's
    fp32 intermediate of a whole stack would not fit)."""
    return [torch.stack([fp4_dequantize(d, s) for d, s in zip(q.data, q.scale)]) for q in ws]


def baseline(ins: list, dense: list[torch.Tensor]):
    """The torch bf16 grouped SwiGLU on the dequantised weights -> (call, y sorted [T K, D])."""
    x, order, offsets, weights = ins[:4]
    w1, w2, w3 = dense
    dim, k = x.shape[-1], order.shape[-1]
    rows = x.reshape(-1, dim)[order.flatten() // k]  # [T K, D] sorted by expert
    w = weights.flatten()[order.flatten()][:, None]
    ends = offsets[1 : len(w1) + 1].to(torch.int32)
    y = torch.empty(rows.shape[0], dim, dtype=x.dtype, device=x.device)

    bounds = list(zip([0, *ends.tolist()], ends.tolist()))

    def loop(a, b):
        out = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device)
        for e, (lo, hi) in enumerate(bounds):
            if hi > lo:
                torch.mm(a[lo:hi], b[e].T, out=out[lo:hi])
        return out

    def grouped_mm(a, b):
        return torch._grouped_mm(a, b.transpose(1, 2), offs=ends)

    grouped = loop
    try:  # torch's grouped GEMM where this torch and card have it
        grouped_mm(rows, w1)
        grouped = grouped_mm
    except (AttributeError, RuntimeError):
        pass

    def call():
        gate = grouped(rows, w1).float().clamp(max=LIMIT)
        up = grouped(rows, w3).float().clamp(-LIMIT, LIMIT)
        h = (torch.nn.functional.silu(gate) * up * w).to(x.dtype)
        y.copy_(grouped(h, w2))

    call.name = "torch._grouped_mm" if grouped is grouped_mm else "torch.mm per expert"
    return call, y


def _time(call, repeat: int, device) -> float:
    """Median µs of one call (kernels.py's CUDA-event timing, L2 flushed before each)."""
    spec = importlib.util.spec_from_file_location("kernels", ROOT / "bench" / "kernels.py")
    kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernels)
    call()  # build and warm
    runs = kernels._time_calls_cuda([call], repeat, device)
    return statistics.median(r[0] for r in runs) * 1e6


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device("meta" if args.estimate_only else "cuda")
    if not args.estimate_only and not torch.cuda.is_available():
        raise SystemExit("bench/experts.py measures on a GPU (--estimate-only needs none)")
    gen = None if args.estimate_only else torch.Generator(device).manual_seed(0)
    root = args.cache
    ws = expert_weights(device, gen)
    dense = None if args.estimate_only else dequantized(ws)
    report = {"dims": dict(D=D, I=I, E=E, K=K), "target": args.target, "steps": []}
    if not args.estimate_only:
        report["device"] = torch.cuda.get_device_name()
    for t in args.tokens:
        ins = step_inputs(t, ws, device, gen)
        call, y = v4c_call(ins, root)
        step = {"tokens": t, "estimate": estimate(ins, call, args.target, root)}
        if not args.estimate_only:
            step["v4c_us"] = _time(call, args.repeat, device)
            base, want = baseline(ins, dense)
            step["baseline_us"] = _time(base, args.repeat, device)
            step["baseline"] = base.name
            got = y.reshape(-1, D).float()
            step["max_rel_diff"] = ((got - want.float()).abs().max()
                                    / want.float().abs().max()).item()  # fmt: skip
            del base, want
        report["steps"].append(step)
        print(json.dumps(step))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
