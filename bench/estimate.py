"""Stage `estimate` of `bench/gpu_check.sh`: each kernel's measured time (the kernels stage's
kernels.json) beside the kernel lens's ESTIMATE of it (codegen/lens.py, the cost model of
codegen/cost.py) on the card that was measured, and their ratio, so that the model's
constants can be corrected from real runs:

    python bench/estimate.py OUT/kernels.json --spec variants/flash-2l-slice --target sm_90 \\
        --json OUT/estimate.json

The plan is the one the kernels stage timed (`kernels.plan_for`); its launches are built for
the target ahead of time (cached by hash under --aot-cache, which a device run can carry
from a CPU build) and joined with the measured calls by (entry, node).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _kernels_module():
    spec = importlib.util.spec_from_file_location("kernels", ROOT / "bench" / "kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def joined(measured: dict, lens: dict) -> dict:
    """Per entry: the measured launches with the lens's estimate of each (its Triton
    kernels summed), and the same per kernel; ratio = estimate / measured."""
    out = {}
    for entry, timed in measured["entries"].items():
        tag = f"B=1,T={timed['tokens']}"
        est: dict[str, dict] = {}
        for r in lens["launches"]:
            if (r["entry"], r["bucket"]) == (entry, tag):
                e = est.setdefault(r["node"], {"est_us": 0.0, "bound": r["bound"]})
                e["est_us"] += r["est_us"]
        rows, groups = [], {}
        for r in timed["launches"]:
            if r["node"] not in est:
                continue
            row = {"node": r["node"], "kernel": r["kernel"], "measured_us": r["seconds"] * 1e6,
                   **est[r["node"]]}  # fmt: skip
            rows.append(row)
            g = groups.setdefault(r["kernel"], {"kernel": r["kernel"], "launches": 0,
                                                "measured_us": 0.0, "est_us": 0.0})  # fmt: skip
            g["launches"] += 1
            g["measured_us"] += row["measured_us"]
            g["est_us"] += row["est_us"]
        for x in [*rows, *groups.values()]:
            x["ratio"] = x["est_us"] / x["measured_us"] if x["measured_us"] > 0 else None
        by_kernel = sorted(groups.values(), key=lambda g: -g["measured_us"])
        out[entry] = {"launches": rows, "by_kernel": by_kernel}
    return out


def main(argv: list[str] | None = None) -> dict:
    from v4c.codegen.lens import lens
    from v4c.codegen.targets import card_for, target
    from v4c.spec import load_spec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kernels_json", type=Path)
    p.add_argument("--spec", default="variants/flash-2l-slice")
    p.add_argument("--target", default="sm_90")
    p.add_argument("--aot-cache", type=Path, default=ROOT / "build" / "aot-cache")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    measured = json.loads(args.kernels_json.read_text())
    dtype = torch.bfloat16 if measured["dtype"] == "torch.bfloat16" else torch.float32
    plan = _kernels_module().plan_for(
        load_spec(args.spec), measured["prompt_len"], measured["weights"], dtype
    )
    t = target(args.target)
    t = dataclasses.replace(t, card=card_for(measured["device"], t.card))
    data = lens(plan, t, args.aot_cache)
    figures = {"target": t.name, "card": t.card.name, "device": measured["device"],
               "model": data["model"], "entries": joined(measured, data)}  # fmt: skip
    for entry, e in figures["entries"].items():
        print(f"{entry}: measured vs ESTIMATE ({t.name} on {t.card.name})")
        for g in e["by_kernel"]:
            ratio = f"{g['ratio']:.2f}" if g["ratio"] else "-"
            print(f"  {g['kernel']:<24} x{g['launches']:<3} {g['measured_us']:10.1f} us "
                  f"measured {g['est_us']:10.1f} us estimated  est/measured {ratio}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    return figures


if __name__ == "__main__":
    main()
