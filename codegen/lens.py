"""The kernel lens over a whole plan: every launch of every entry point, built ahead of time
for a target (codegen/aot.py) at the shapes the plan runs, and estimated (codegen/cost.py).

Buckets: decode at batch 1 and at the plan's `max_batch`; prefill, verify and draft at
their limits (prefill's chunk length). The result is JSON data, `DIR/targets/<target>.json`
(written by `v4c compile --target`), and the source of the report's lens section.
"""

from __future__ import annotations

from math import ceil
from pathlib import Path

import torch

from v4c.codegen import aot, cost
from v4c.codegen.targets import Target
from v4c.ir.plan import Plan
from v4c.ir.semantics.quant import QuantWeight
from v4c.ir.types import torch_dtype


def meta_weights(plan: Plan, dtype: torch.dtype) -> dict:
    """Every weight of the plan as a shape on `meta`, in the format the plan records."""
    out = {}
    for name, info in plan.params.items():
        shape, fmt = list(info.shape), info.format
        *lead, o, i = [1, *shape] if len(shape) < 2 else shape
        (bo, bi), e8m0 = fmt.block, torch.float8_e8m0fnu
        if fmt.kind == "fp8":
            data = torch.empty(shape, dtype=torch.float8_e4m3fn, device="meta")
            scale = torch.empty([*lead, ceil(o / bo), ceil(i / bi)], dtype=e8m0, device="meta")
            out[name] = QuantWeight(data, scale, fmt)
        elif fmt.kind == "fp4":
            data = torch.empty([*lead, o, i // 2], dtype=torch.int8, device="meta")
            scale = torch.empty([*lead, o, i // bi], dtype=e8m0, device="meta")
            out[name] = QuantWeight(data, scale, fmt)
        else:
            out[name] = torch.empty(shape, dtype=torch_dtype(info.dtype, dtype), device="meta")
    return out


def buckets(plan: Plan) -> list[tuple[str, int, int]]:
    found = []
    for entry, e in plan.entries.items():
        sizes = [(1, 1), (e.env["B"], 1)] if entry == "decode" else [(e.env["B"], e.env["T"])]
        found += [(entry, b, t) for b, t in dict.fromkeys(sizes)]
    return found


def programs(plan: Plan, kernel_root: Path | None = None) -> dict:
    from v4c.runtime.caches import new_caches
    from v4c.runtime.engine import input_buffers
    from v4c.runtime.program import Program

    meta = torch.device("meta")
    dtype = torch.float32 if plan.options["dtype"] == "fp32" else torch.bfloat16
    states = {k: (s["shape"], s["dtype"], s["fill"]) for k, s in plan.states.items()}
    o = plan.options
    caches = new_caches(states, o["max_batch"], o["max_seq"], device=meta, dtype=dtype)
    inputs, params = input_buffers(plan, meta, dtype), meta_weights(plan, dtype)
    return {
        entry: Program(
            plan,
            entry,
            params=params,
            states=caches,
            inputs=inputs,
            device=meta,
            dtype=dtype,
            backend="triton",
            kernel_root=kernel_root,
        )  # fmt: skip
        for entry in plan.entries
    }


def _raw_bytes(c: aot.Captured) -> int:
    return sum(v.numel() * v.element_size() for v in c.args.values() if isinstance(v, torch.Tensor))


def lens(plan: Plan, target: Target, cache: Path | None = None, progress=None) -> dict:
    """Per launch and per entry bucket: facts, bytes, flops, the estimate and roofline."""
    aot.check_not_interpreted()
    card, launches, entries = target.card, [], {}
    progs = programs(plan)
    for entry, b, t in buckets(plan):
        env = {**plan.entries[entry].env, "B": b, "T": t}
        tag = f"B={b},T={t}"
        step = progs[entry].bind(b, t)
        compute = [la for la in plan.entries[entry].launches if la.kind != "view"]
        rows = []
        for launch, call in zip(compute, step.calls):
            with aot.recording() as seen:
                call()
            nbytes = cost.launch_bytes(launch, plan, env)
            flops = cost.launch_flops(launch, plan, env)
            if launch.kind != "kernel":
                dtype = plan.options["dtype"]
                est = cost.estimate_library(card, nbytes, flops, dtype)
                rows.append({"node": launch.node, "template": launch.kernel,
                             "kernel": launch.op, "kind": launch.kind, "grid": None,
                             "ctas": None, **est})  # fmt: skip
                continue
            raw = [_raw_bytes(c) for c in seen]
            built = []
            for c in seen:
                try:
                    built.append(aot.cached_facts(c, target, cache, progress))
                except aot.AotError as err:  # reported per launch; the rest still builds
                    built.append({"error": str(err).splitlines()[-1][:300]})
            dots = [bool(f.get("dots")) for f in built]
            shares = zip(seen, built, cost.split(nbytes, raw), cost.split(flops, raw, dots))
            for c, facts, kb, kf in shares:
                ctas = c.grid[0] * c.grid[1] * c.grid[2]
                est = cost.estimate(card, kb, kf, ctas, facts)
                if "error" in facts:
                    est["flags"].insert(0, f"does not build for {target.name}")
                rows.append({"node": launch.node, "template": launch.kernel,
                             "kernel": c.fn.__name__, "kind": "kernel", "grid": list(c.grid),
                             "ctas": ctas, **facts, **est})  # fmt: skip
        launches += [{"entry": entry, "bucket": tag, **r} for r in rows]
        entries.setdefault(entry, {})[tag] = summary(rows)
    return {
        "target": target.name,
        "card": card.name,
        "model": cost.RULE,
        "constants": {
            "hbm_bytes_s": card.hbm_bytes_s,
            "sms": card.sms,
            "l2_bytes": card.l2_bytes,
            "smem_block": card.smem_block,
            "launch_s": card.launch_s,
            "peak_flops_s": card.peak,
        },  # fmt: skip
        "entries": entries,
        "launches": launches,
    }


def summary(rows: list[dict]) -> dict:
    est = sum(r["est_us"] for r in rows)
    roof = sum(r["roofline_us"] for r in rows)
    top = sorted(rows, key=lambda r: -r["est_us"])[:10]
    return {
        "launches": len(rows),
        "est_us": est,
        "roofline_us": roof,
        "ratio": est / roof if roof else None,
        "top10": [
            {
                k: r[k]
                for k in ("node", "kernel", "template", "est_us", "roofline_us", "bound", "ctas")
            }
            for r in top
        ],  # fmt: skip
    }


def write_targets(plan: Plan, out: Path, names: list[str], progress=None) -> list[str]:
    """`v4c compile --target`: DIR/targets/<target>.json and the report's lens sections;
    returns the lines to print."""
    import json

    from v4c.codegen.lens_report import entry_lines, section
    from v4c.codegen.targets import target

    chosen = [target(n) for n in names]  # every name checked before any build
    folder = out / "targets"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for t in {t.name: t for t in chosen}.values():
        data = lens(plan, t, progress=progress)
        (folder / f"{t.name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        with open(out / "report.md", "a") as report:
            report.write("\n" + section(data))
        lines += [f"{t.name} ({t.card.name}, estimate):"]
        lines += [f"  {x}" for x in entry_lines(data)]
        failed = {(r["template"], r["kernel"], r["error"]) for r in data["launches"]
                  if "error" in r}  # fmt: skip
        lines += [f"  does not build: {a}.{b}: {why}" for a, b, why in sorted(failed)]
    return lines


if __name__ == "__main__":  # python -m v4c.codegen.lens OUT.json TARGET SPEC... (CI gates)
    import json
    import sys

    from v4c.compile import compile_spec
    from v4c.codegen.targets import target
    from v4c.spec import load_spec

    out, name, *specs = sys.argv[1:]
    found = {}
    for spec in specs:
        plan = compile_spec(load_spec(spec)).plan
        data = lens(plan, target(name))
        data["plan_kernels"] = {
            entry: sorted({la.node for la in e.launches if la.kind == "kernel"})
            for entry, e in plan.entries.items()
        }
        found[spec] = data
    Path(out).write_text(json.dumps(found))
