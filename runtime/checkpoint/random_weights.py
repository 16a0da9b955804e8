"""Deterministic random weights for a spec, scaled so a random model's activations stay
O(1) through every layer: the tiny model's checkpoint and the tests' weights come from here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from v4c.ir.weights import PlanWeight
from v4c.spec import ModelSpec
from v4c.spec.tensors import TensorInfo, checkpoint_tensors


def random_weights(
    spec: ModelSpec, seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """Official tensor names -> tensors (experts stacked [E, ...] under the `{e}` name), made
    on `device` by its own generator (a GPU makes Flash-sized weights in a moment; the
    numbers differ from the CPU's for the same seed)."""
    gen = torch.Generator(device).manual_seed(seed)
    return {t.name: _one(t, spec, gen, dtype) for t in checkpoint_tensors(spec)}


def as_stored(weights: dict[str, torch.Tensor], params: Mapping[str, PlanWeight]) -> dict:
    """The weights in a plan's formats (`Plan.params`): those the plan keeps FP8/FP4
    quantised as a checkpoint would store them, the others as they are."""
    from v4c.ir.semantics.quant import QuantWeight

    def held(name: str, w: torch.Tensor):
        fmt = params[name].format if name in params else None
        return QuantWeight.quantize(w, fmt) if fmt is not None and fmt.quantised else w

    return {name: held(name, w) for name, w in weights.items()}


def _one(t: TensorInfo, spec: ModelSpec, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    shape = ((t.stack,) if t.stack else ()) + t.shape
    parts = t.name.split(".")
    leaf = parts[-2] if parts[-1] == "weight" else parts[-1]
    if t.dtype == "i64":  # tid2eid: distinct experts per token
        return torch.rand(
            t.shape[0], spec.moe.num_experts, generator=gen, device=gen.device
        ).argsort(-1)[:, : t.shape[1]]
    if "norm" in leaf:  # RMSNorm weights around 1
        w = 1 + 0.1 * torch.randn(shape, generator=gen, device=gen.device)
    elif leaf.endswith("_fn") or leaf.endswith("_base") or leaf in ("ape", "bias", "attn_sink"):
        w = 0.5 * torch.randn(shape, generator=gen, device=gen.device)
    elif leaf.endswith("_scale"):
        w = 0.5 + 0.5 * torch.rand(shape, generator=gen, device=gen.device)
    elif leaf == "embed":
        w = torch.randn(shape, generator=gen, device=gen.device)
    elif leaf in ("wo_b", "w2"):  # a sublayer's last projection: small updates to the residual
        w = 0.25 * torch.randn(shape, generator=gen, device=gen.device) / shape[-1] ** 0.5
    else:  # a linear layer [out, in]: unit-variance outputs for unit-variance inputs
        w = torch.randn(shape, generator=gen, device=gen.device) / shape[-1] ** 0.5
    return w.to(torch.float32 if t.dtype == "fp32" else dtype)
