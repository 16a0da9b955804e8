"""Library baselines beside the decode step's dense GEMMs (the `kernels` stage of
`bench/gpu_check.sh`, issue 21's "each decode GEMM >= 1.0x torch.mm"): for every `linear`,
`grouped_linear` and `merged_linear` launch, the same product through

- `torch.mm` (`torch.bmm` per group for wo_a, one `torch.mm` per part of a merged launch)
  on the launch's weight in bf16 (an FP8 weight dequantised once, before timing) and a bf16
  input of the launch's rows;
- `torch._scaled_mm` on the weight's stored e4m3 codes, where the installed torch has it and
  the device runs it: the input as e4m3 (rows padded to 16, as it requires) and unit
  tensor-wide scales. It moves the FP8 GEMM's bytes and does its FLOPs, not its block-scaled
  arithmetic: a speed baseline only. A plain `linear` only (wo_a's groups would be G calls).

Each baseline is timed as the plan's calls are (`kernels._time_calls_*`: CUDA events, the L2
flushed before each repetition), so the ratio v4c / library is like for like.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from math import prod

import torch

GEMMS = ("linear", "grouped_linear", "merged_linear")


def _dense_bf16(weight) -> torch.Tensor:
    from v4c.ir.semantics.quant import QuantWeight

    if isinstance(weight, QuantWeight):
        return weight.dequantize(torch.bfloat16)
    return weight.to(torch.bfloat16)


def _scaled_mm(x: torch.Tensor, weight) -> Callable | None:
    """torch._scaled_mm on the stored FP8 codes of `weight` [N, K], or None where it cannot
    run here (no such function, no FP8 weight, a device or shape it refuses)."""
    from v4c.ir.semantics.quant import QuantWeight

    if not hasattr(torch, "_scaled_mm") or not isinstance(weight, QuantWeight):
        return None
    if weight.data.dtype != torch.float8_e4m3fn:
        return None
    rows = -(-x.shape[0] // 16) * 16
    xq = torch.zeros(rows, x.shape[1], dtype=torch.float8_e4m3fn, device=x.device)
    xq[: x.shape[0]] = x.to(torch.float8_e4m3fn)
    b, one = weight.data.t(), torch.ones((), dtype=torch.float32, device=x.device)

    def call():
        return torch._scaled_mm(xq, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

    try:
        call()
    except (RuntimeError, NotImplementedError):
        return None
    return call


def baseline_calls(launch, program, env: dict[str, int]) -> dict[str, Callable]:
    """{"torch_mm": call, "scaled_mm": call (where it runs)} for one dense GEMM launch."""
    from v4c.ir.types import resolve_dim

    if launch.op == "merged_linear":  # one torch.mm per part, on the one input
        shape = [resolve_dim(d, env) for d in launch.inputs[0].dims]
        ws = [_dense_bf16(program.params[ref.name]) for ref in launch.inputs[1:]]
        x = torch.randn(prod(shape[:-1]), shape[-1], dtype=torch.bfloat16, device=ws[0].device)
        return {"torch_mm": lambda: [torch.mm(x, w.t()) for w in ws]}
    weight = program.params[launch.inputs[1].name]
    w = _dense_bf16(weight)  # [N, K] (grouped: G blocks of N_G rows, each on its K_G inputs)
    shape = [resolve_dim(d, env) for d in launch.inputs[0].dims]
    device = w.device
    if launch.op == "grouped_linear":
        groups = launch.constants["groups"]
        rows = prod(shape[:2])
        x = torch.randn(groups, rows, w.shape[1], dtype=torch.bfloat16, device=device)
        wg = w.view(groups, w.shape[0] // groups, w.shape[1]).transpose(1, 2)  # [G, K_G, N_G]
        return {"torch_mm": lambda: torch.bmm(x, wg)}
    x = torch.randn(prod(shape[:-1]), shape[-1], dtype=torch.bfloat16, device=device)
    calls = {"torch_mm": lambda: torch.mm(x, w.t())}
    scaled = _scaled_mm(x, weight)
    if scaled is not None:
        calls["scaled_mm"] = scaled
    return calls


def time_baselines(program, launches: list, env: dict[str, int], repeat: int, timer) -> dict:
    """launch index -> {"torch_mm_seconds": s, "scaled_mm_seconds": s (where it ran)} for the
    dense GEMMs among `launches` (the step's non-view launches), medians over `repeat`;
    `timer(calls, repeat)` -> seconds per repetition per call (kernels.py's)."""
    found = [(i, name, call) for i, launch in enumerate(launches) if launch.op in GEMMS
             for name, call in baseline_calls(launch, program, env).items()]  # fmt: skip
    if not found:
        return {}
    runs = timer([call for *_, call in found], repeat)
    out: dict[int, dict] = {}
    for j, (i, name, _) in enumerate(found):
        out.setdefault(i, {})[f"{name}_seconds"] = statistics.median(run[j] for run in runs)
    return out
