"""The `--device-gb` that keeps a share of a bench plan's routed experts on the device and the
rest in pinned host memory (`bench/gpu_check.sh`'s offload stage: half of the Flash slice's):

    python bench/offload_budget.py SPEC --prompt-len N --decode N [--resident 0.5]

Prints the budget in GiB: the plan's minimum (`v4c.budget.minimum_bytes`: everything but the
routed experts, and the slot cache) plus room for that share of its experts, for the plan
`v4c bench SPEC --weights as-stored --speculative off --batch 1` runs on a GPU (bf16).
"""

from __future__ import annotations

import argparse

import torch

from v4c.bench import bench_plan
from v4c.budget import GiB, minimum_bytes, routed_experts
from v4c.spec import load_spec


def budget_gb(spec_name: str, prompt_len: int, decode: int, resident: float) -> float:
    spec = load_spec(spec_name)
    plan = bench_plan(spec, batch=1, prompt_len=prompt_len, decode=decode,
                      weight_formats="as-stored", dtype=torch.bfloat16)  # fmt: skip
    groups = routed_experts(plan).values()
    keep = int(resident * sum(e for e, _ in groups))
    size = max(b for _, b in groups)
    # half an expert spare: the GiB figure printed is rounded, fit() counts whole bytes
    return (minimum_bytes(plan, spec.moe.top_k) + (keep + 0.5) * size) / GiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--prompt-len", type=int, required=True)
    parser.add_argument("--decode", type=int, required=True)
    parser.add_argument("--resident", type=float, default=0.5, help="share of experts kept")
    args = parser.parse_args(argv)
    print(f"{budget_gb(args.spec, args.prompt_len, args.decode, args.resident):.6f}")


if __name__ == "__main__":
    main()
