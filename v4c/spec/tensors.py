"""Every checkpoint tensor a spec implies: official name, logical shape, dtype, storage format.

This list is the one description of the model's weights: parameter counts sum it, the IR
builder binds each entry to exactly one `param` node (and the verifier checks that), and
the checkpoint loader knows from it what to expect (V4_REFERENCE §13.1).

Routed experts are one entry per layer and projection with `stack = E`: the name holds
`{e}` where the expert index goes, and `shape` is one expert's.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Literal

from v4c.spec.layers import LayerInfo, layer_table
from v4c.spec.schema import CSA_RATIO, ModelSpec, coff

Part = Literal[
    "embedding", "lm_head", "attention", "compressors", "indexers", "hc", "router",
    "routed_experts", "shared_experts", "norms", "mtp", "tables",
]  # fmt: skip
Storage = Literal["fp8", "fp4", None]  # quantised in the checkpoint (with a `.scale`), or not


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: Literal["bf16", "fp32", "i64"]  # logical (dequantised) dtype
    part: Part
    storage: Storage = None
    stack: int = 0  # > 0: one tensor per expert, `{e}` in the name

    @property
    def numel(self) -> int:
        return prod(self.shape) * max(self.stack, 1)


def checkpoint_tensors(spec: ModelSpec) -> list[TensorInfo]:
    """All tensors, main model first (in layer order), then the MTP blocks."""
    d, v, n = spec.hidden_size, spec.vocab_size, spec.hc.mult
    out = [
        TensorInfo("embed.weight", (v, d), "bf16", "embedding"),
        TensorInfo("head.weight", (v, d), "bf16", "lm_head"),
        *main_head_tensors(spec),
    ]
    for row in layer_table(spec):
        prefix = f"mtp.{row.index - spec.num_layers}." if row.mtp else f"layers.{row.index}."
        block = _block(spec, row, prefix)
        if row.mtp:
            fp8 = _dense(spec)
            block = [
                TensorInfo(f"{prefix}e_proj.weight", (d, d), "bf16", "mtp", fp8),
                TensorInfo(f"{prefix}h_proj.weight", (d, d), "bf16", "mtp", fp8),
                *(
                    TensorInfo(f"{prefix}{k}.weight", (d,), "bf16", "mtp")
                    for k in ("enorm", "hnorm", "norm")
                ),
                *_hc_head(prefix, n, d, "mtp"),
                *block,
            ]
        out += block
    return out


def main_head_tensors(spec: ModelSpec) -> list[TensorInfo]:
    """The final norm and HC head: only the main model's logits read them (each MTP block
    has its own, and drafts from the hidden streams before them)."""
    d, n = spec.hidden_size, spec.hc.mult
    return [TensorInfo("norm.weight", (d,), "bf16", "norms"), *_hc_head("", n, d, "hc")]


def _dense(spec: ModelSpec) -> Storage:
    return "fp8" if spec.quant.weights == "fp8" else None


def _hc_head(prefix: str, n: int, d: int, part: Part) -> list[TensorInfo]:
    return [
        TensorInfo(f"{prefix}hc_head_fn", (n, n * d), "fp32", part),
        TensorInfo(f"{prefix}hc_head_base", (n,), "fp32", part),
        TensorInfo(f"{prefix}hc_head_scale", (1,), "fp32", part),
    ]


def _block(spec: ModelSpec, row: LayerInfo, p: str) -> list[TensorInfo]:
    d, a, n = spec.hidden_size, spec.attention, spec.hc.mult
    hd, h, fp8 = a.head_dim, a.num_heads, _dense(spec)
    mix = (2 + n) * n
    out = []
    for site in ("attn", "ffn"):
        out += [
            TensorInfo(f"{p}hc_{site}_fn", (mix, n * d), "fp32", "hc"),
            TensorInfo(f"{p}hc_{site}_base", (mix,), "fp32", "hc"),
            TensorInfo(f"{p}hc_{site}_scale", (3,), "fp32", "hc"),
            TensorInfo(f"{p}{site}_norm.weight", (d,), "bf16", "norms"),
        ]
    at = f"{p}attn."
    out += [
        TensorInfo(f"{at}attn_sink", (h,), "fp32", "attention"),
        TensorInfo(f"{at}wq_a.weight", (a.q_lora_rank, d), "bf16", "attention", fp8),
        TensorInfo(f"{at}q_norm.weight", (a.q_lora_rank,), "bf16", "norms"),
        TensorInfo(f"{at}wq_b.weight", (h * hd, a.q_lora_rank), "bf16", "attention", fp8),
        TensorInfo(f"{at}wkv.weight", (hd, d), "bf16", "attention", fp8),
        TensorInfo(f"{at}kv_norm.weight", (hd,), "bf16", "norms"),
        TensorInfo(f"{at}wo_a.weight", (a.o_groups * a.o_lora_rank, h * hd // a.o_groups), "bf16", "attention", fp8),  # noqa: E501
        TensorInfo(f"{at}wo_b.weight", (d, a.o_groups * a.o_lora_rank), "bf16", "attention", fp8),
    ]  # fmt: skip
    if row.compress_ratio:
        out += _compressor(f"{at}compressor.", d, hd, row.compress_ratio, "compressors")
    if row.has_indexer:
        ix = a.indexer
        out += [
            TensorInfo(f"{at}indexer.wq_b.weight", (ix.num_heads * ix.head_dim, a.q_lora_rank), "bf16", "indexers", fp8),  # noqa: E501
            TensorInfo(f"{at}indexer.weights_proj.weight", (ix.num_heads, d), "bf16", "indexers"),
            *_compressor(f"{at}indexer.compressor.", d, ix.head_dim, CSA_RATIO, "indexers"),
        ]  # fmt: skip
    return out + _ffn(spec, row, f"{p}ffn.")


def _compressor(p: str, d: int, c: int, m: int, part: Part) -> list[TensorInfo]:
    width = coff(m) * c  # an overlapping compressor projects both halves of its windows
    return [
        TensorInfo(f"{p}wkv.weight", (width, d), "bf16", part),
        TensorInfo(f"{p}wgate.weight", (width, d), "bf16", part),
        TensorInfo(f"{p}ape", (m, width), "fp32", part),
        TensorInfo(f"{p}norm.weight", (c,), "bf16", "norms"),
    ]


def _ffn(spec: ModelSpec, row: LayerInfo, p: str) -> list[TensorInfo]:
    d, moe = spec.hidden_size, spec.moe
    e, i = moe.num_experts, moe.intermediate_size
    fp8 = _dense(spec)
    experts: Storage = {"fp4": "fp4", "fp8": "fp8", "bf16": None}[spec.quant.expert_format]
    out = [TensorInfo(f"{p}gate.weight", (e, d), "bf16", "router")]
    if row.gate == "score":
        out.append(TensorInfo(f"{p}gate.bias", (e,), "fp32", "router"))
    else:
        out.append(TensorInfo(f"{p}gate.tid2eid", (spec.vocab_size, moe.top_k), "i64", "tables"))
    for w, shape in (("w1", (i, d)), ("w2", (d, i)), ("w3", (i, d))):
        out.append(
            TensorInfo(f"{p}experts.{{e}}.{w}.weight", shape, "bf16", "routed_experts", experts, e)
        )
    for s in range(moe.num_shared_experts):
        # one shared expert is stored unnumbered, as in the official release
        sp = f"{p}shared_experts." if moe.num_shared_experts == 1 else f"{p}shared_experts.{s}."
        for w, shape in (("w1", (i, d)), ("w2", (d, i)), ("w3", (i, d))):
            out.append(TensorInfo(f"{sp}{w}.weight", shape, "bf16", "shared_experts", fp8))
    return out
