"""The HF transformers layout of a V4 checkpoint: `DeepseekV4ForCausalLM`'s own parameter
and buffer names (V4_REFERENCE §13.4), as transformers writes them with
`save_pretrained(save_original_format=False)`:
- `model.` prefix on everything but `lm_head.weight`;
- `mlp.experts.gate_up_proj` [E, 2I, D] = cat(w1, w3) along dim 1, `down_proj` [E, D, I];
- the gate's `e_score_correction_bias` and `tid2eid` are (persistent) buffers;
- no MTP: HF does not build the MTP block, so the layout has no `mtp.*` tensors;
- exactly one shared expert, as `DeepseekV4MLP` is one module.

Two flavours. hf: dequantised; unquantised floats are read in any float dtype, and the
writer stores logical bf16 tensors in the dtype it is given and logical fp32 ones (hc,
sinks, ape, gate bias) in fp32. hf-fp8: a model transformers holds in FP8; each FP8 weight
beside its E8M0 `weight_scale_inv` (the official `.scale`), the merged experts as stored:
packed FP4 `gate_up_proj` [E, 2I, D/2] (w1 rows first) with `gate_up_proj_scale_inv`
[E, 2I, D/32], `down_proj` with `down_proj_scale_inv`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from v4c.errors import CheckpointError
from v4c.ir.semantics.quant import QuantWeight
from v4c.ir.types import torch_dtype
from v4c.runtime.checkpoint.layout import (
    FLOATS,
    Stored,
    Unit,
    codec_of,
    official_unit,
    renamed,
)
from v4c.runtime.checkpoint.pieces import Index, Ranges, dense_index
from v4c.spec import ModelSpec
from v4c.spec.tensors import TensorInfo, checkpoint_tensors

_TOP = {
    "embed.weight": "model.embed_tokens.weight",
    "head.weight": "lm_head.weight",
    "norm.weight": "model.norm.weight",
    "hc_head_fn": "model.hc_head.hc_fn",
    "hc_head_base": "model.hc_head.hc_base",
    "hc_head_scale": "model.hc_head.hc_scale",
}
# official name after `layers.{l}.` -> HF name after `model.layers.{l}.`
_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    **{
        f"hc_{site}_{k}": f"{site}_hc.{k}"
        for site in ("attn", "ffn")
        for k in ("fn", "base", "scale")
    },
    "attn.attn_sink": "self_attn.sinks",
    "attn.wq_a.weight": "self_attn.q_a_proj.weight",
    "attn.q_norm.weight": "self_attn.q_a_norm.weight",
    "attn.wq_b.weight": "self_attn.q_b_proj.weight",
    "attn.wkv.weight": "self_attn.kv_proj.weight",
    "attn.kv_norm.weight": "self_attn.kv_norm.weight",
    "attn.wo_a.weight": "self_attn.o_a_proj.weight",
    "attn.wo_b.weight": "self_attn.o_b_proj.weight",
    "attn.indexer.wq_b.weight": "self_attn.compressor.indexer.q_b_proj.weight",
    "attn.indexer.weights_proj.weight": "self_attn.compressor.indexer.scorer.weights_proj.weight",
    "ffn.gate.weight": "mlp.gate.weight",
    "ffn.gate.bias": "mlp.gate.e_score_correction_bias",
    "ffn.gate.tid2eid": "mlp.gate.tid2eid",
    "ffn.shared_experts.w1.weight": "mlp.shared_experts.gate_proj.weight",
    "ffn.shared_experts.w2.weight": "mlp.shared_experts.down_proj.weight",
    "ffn.shared_experts.w3.weight": "mlp.shared_experts.up_proj.weight",
}
_COMPRESSORS = {
    "attn.compressor.": "self_attn.compressor.",
    "attn.indexer.compressor.": "self_attn.compressor.indexer.",
}
_COMPRESSOR = {
    "wkv.weight": "kv_proj.weight",
    "wgate.weight": "gate_proj.weight",
    "ape": "position_bias",
    "norm.weight": "kv_norm.weight",
}


def hf_name(name: str) -> str:
    """The HF name of a non-expert, non-MTP official tensor name."""
    if name in _TOP:
        return _TOP[name]
    layer, rest = name.removeprefix("layers.").split(".", 1)
    for prefix, hf_prefix in _COMPRESSORS.items():
        if rest.startswith(prefix):
            return f"model.layers.{layer}.{hf_prefix}{_COMPRESSOR[rest[len(prefix) :]]}"
    return f"model.layers.{layer}.{_BLOCK[rest]}"


def hf_units(
    spec: ModelSpec, dtype: torch.dtype = torch.bfloat16, *, quantised: bool = False
) -> list[Unit]:
    """The HF layout of a spec; `dtype` is what the writer stores logical bf16 tensors in.
    `quantised`: the hf-fp8 flavour, FP8/FP4 weights as the spec's storage says."""
    if spec.moe.num_shared_experts != 1:
        n = spec.moe.num_shared_experts
        raise CheckpointError(f"the HF layout holds exactly one shared expert; {spec.name} has {n}")
    units, experts = [], {}
    for t in checkpoint_tensors(spec):
        if t.name.startswith("mtp."):
            continue
        if t.stack:  # layers.{l}.ffn.experts.{e}.w1.weight -> experts["layers.{l}"]["w1"]
            layer, w = t.name.split(".ffn.experts.{e}.")
            experts.setdefault(layer, {})[w.removesuffix(".weight")] = t
        elif quantised and t.storage:
            units.append(renamed(official_unit(t, spec), _hf_stored_name))
        else:
            units.append(_one(t, hf_name(t.name), dtype))
    for layer, ws in experts.items():
        hf = f"model.{layer}.mlp.experts."
        if quantised and ws["w1"].storage:
            units += [
                _experts_as_stored(hf + "gate_up_proj", [ws["w1"], ws["w3"]], spec),
                _experts_as_stored(hf + "down_proj", [ws["w2"]], spec),
            ]
        else:
            units += [
                _gate_up(hf + "gate_up_proj", ws["w1"], ws["w3"], dtype),
                _one(ws["w2"], hf + "down_proj", dtype),
            ]
    return units


def _hf_stored_name(name: str) -> str:
    """An official stored name in hf-fp8: `X.scale` -> `hf_name(X.weight)_scale_inv`."""
    if name.endswith(".scale"):
        return hf_name(name.removesuffix(".scale") + ".weight") + "_scale_inv"
    return hf_name(name)


def _written(t: TensorInfo, dtype: torch.dtype) -> torch.dtype:
    return torch_dtype(t.dtype, dtype)


def _one(t: TensorInfo, name: str, dtype: torch.dtype) -> Unit:
    """One logical tensor stored as one HF tensor (experts: already stacked [E, ...])."""
    shape = ((t.stack,) if t.stack else ()) + t.shape
    stored = Stored(name, ("I64",) if t.dtype == "i64" else FLOATS, shape)

    def decode(xs: list[Tensor], target: torch.dtype) -> list[Tensor]:
        return [xs[0].to(target)]

    def encode(values: list[Tensor]) -> list[Tensor]:
        return [values[0].to(_written(t, dtype)).contiguous()]

    def piece(ranges: Ranges) -> list[tuple[int, Index]]:  # stored as the logical tensor is
        return [(0, dense_index(ranges))]

    return Unit((stored,), (t,), decode, encode, piece=piece)


def _gate_up(name: str, w1: TensorInfo, w3: TensorInfo, dtype: torch.dtype) -> Unit:
    """w1, w3 [E, I, D] <-> gate_up_proj [E, 2I, D] (w1 rows first)."""
    e, (i, d) = w1.stack, w1.shape
    stored = Stored(name, FLOATS, (e, 2 * i, d))

    def decode(xs: list[Tensor], target: torch.dtype) -> list[Tensor]:
        gate, up = xs[0].split(i, dim=1) if len(xs) == 1 else xs  # the whole, or two pieces
        return [gate.to(target).contiguous(), up.to(target).contiguous()]

    def encode(values: list[Tensor]) -> list[Tensor]:
        return [torch.cat(values, dim=1).to(_written(w1, dtype)).contiguous()]

    def piece(ranges: Ranges) -> list[tuple[int, Index]]:
        """w1 and w3 are split alike (experts, inner rows): the same rows of each half."""
        (e0, e1), (a, b), (c0, c1) = ranges
        experts, cols = slice(e0, e1), slice(c0, c1)
        return [(0, (experts, slice(a, b), cols)), (0, (experts, slice(i + a, i + b), cols))]

    return Unit((stored,), (w1, w3), decode, encode, piece=piece)


def _experts_as_stored(name: str, parts: list[TensorInfo], spec: ModelSpec) -> Unit:
    """Quantised routed experts of one projection, or of two merged along the rows (w1, w3):
    data [E, n·O, ·] and `{name}_scale_inv` [E, n·O', ·], each expert's official encoding."""
    codec, (e, n) = codec_of(parts[0], spec), (parts[0].stack, len(parts))
    data, scale = codec.stored(name)
    rows = parts[0].shape[0]
    if codec.format.kind == "fp8" and n > 1 and rows % codec.block[0]:
        raise CheckpointError(
            f"{name}: FP8 experts with {rows} rows do not fill whole scale blocks; "
            "the merged HF layout cannot hold them"
        )
    stored = (
        Stored(name, data.dtypes, (e, n * data.shape[0], data.shape[1])),
        Stored(name + "_scale_inv", scale.dtypes, (e, n * scale.shape[0], scale.shape[1]), name),
    )

    def split(xs: list[Tensor]) -> list[list[Tensor]]:  # -> [data, scale] per projection
        return [[d.contiguous(), s.contiguous()] for d, s in zip(*(x.chunk(n, 1) for x in xs))]

    def decode(xs: list[Tensor], target: torch.dtype) -> list[Tensor]:
        return [codec.decode(part, target)[0] for part in split(xs)]

    def encode(values: list[Tensor]) -> list[Tensor]:
        encoded = [codec.encode([v]) for v in values]  # [[data, scale]] per projection
        return [torch.cat(k, dim=1) for k in zip(*encoded)]

    def keep(xs: list[Tensor]) -> list[QuantWeight]:
        return [codec.keep(part) for part in split(xs)]

    return Unit(stored, tuple(parts), decode, encode, keep)
