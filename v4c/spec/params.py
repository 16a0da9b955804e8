"""Parameter counts by part, from the tensor shapes a spec implies (V4_REFERENCE §13.1).

A parameter is one weight element, whatever its stored format (an FP4 expert weight counts
once per element, not per byte); block scales and the int64 `tid2eid` tables are not
parameters. "Active per token" is what one decode token reads: every dense tensor, the
lm_head, the shared experts and `top_k` of the routed experts of each layer; the embedding
is left out (one row is gathered, no matmul) and so is MTP (its own line).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from v4c.spec.layers import LayerInfo, layer_table
from v4c.spec.schema import CSA_RATIO, ModelSpec

PARTS = (
    "embedding",
    "lm_head",
    "attention",
    "compressors",
    "indexers",
    "hc",
    "router",
    "routed_experts",
    "shared_experts",
    "norms",
)


@dataclass(frozen=True)
class ParamCount:
    by_part: dict[str, int]  # main model, PARTS order
    mtp: int  # every MTP block, with its own HC head and projections
    active: int  # per token, main model (see module docstring)
    active_mtp: int  # per token, one MTP step

    @property
    def total(self) -> int:
        return sum(self.by_part.values())


def count_params(spec: ModelSpec) -> ParamCount:
    rows = layer_table(spec)
    main, mtp = Counter(), Counter()
    for row in rows:
        _block(spec, row, mtp if row.mtp else main)
    d, v, n = spec.hidden_size, spec.vocab_size, spec.hc.mult
    main["embedding"] += v * d
    main["lm_head"] += v * d
    main["hc"] += n * n * d + n + 1  # hc_head fn, base, scale
    main["norms"] += d  # final norm
    for _ in range(spec.mtp.num_layers):  # e_proj, h_proj; enorm, hnorm, norm; hc_head
        mtp["attention"] += 2 * d * d
        mtp["norms"] += 3 * d
        mtp["hc"] += n * n * d + n + 1
    return ParamCount(
        by_part={part: main[part] for part in PARTS},
        mtp=sum(mtp.values()),
        active=_active(spec, main, spec.num_layers),
        active_mtp=_active(spec, mtp, spec.mtp.num_layers) if spec.mtp.num_layers else 0,
    )


def _active(spec: ModelSpec, parts: Counter, layers: int) -> int:
    moe = spec.moe
    per_expert = 3 * moe.intermediate_size * spec.hidden_size
    routed_active = layers * moe.top_k * per_expert
    return sum(parts.values()) - parts["embedding"] - parts["routed_experts"] + routed_active


def _block(spec: ModelSpec, row: LayerInfo, out: Counter) -> None:
    d, a, n = spec.hidden_size, spec.attention, spec.hc.mult
    hd, heads = a.head_dim, a.num_heads
    out["attention"] += (
        a.q_lora_rank * d  # wq_a
        + heads * hd * a.q_lora_rank  # wq_b
        + hd * d  # wkv
        + a.o_groups * a.o_lora_rank * (heads * hd // a.o_groups)  # wo_a
        + d * a.o_groups * a.o_lora_rank  # wo_b
        + heads  # attn_sink
    )
    out["norms"] += 2 * d + a.q_lora_rank + hd  # attn_norm, ffn_norm, q_norm, kv_norm
    out["hc"] += 2 * ((2 + n) * n * n * d + (2 + n) * n + 3)  # hc_attn_*, hc_ffn_*
    m = row.compress_ratio
    if m:
        out["compressors"] += _compressor(d, hd, m)
        out["norms"] += hd
    if row.has_indexer:
        ix = a.indexer
        out["indexers"] += ix.num_heads * ix.head_dim * a.q_lora_rank + ix.num_heads * d
        out["indexers"] += _compressor(d, ix.head_dim, CSA_RATIO)
        out["norms"] += ix.head_dim
    moe = spec.moe
    per_expert = 3 * moe.intermediate_size * d
    out["router"] += moe.num_experts * d + (moe.num_experts if row.gate == "score" else 0)
    out["routed_experts"] += moe.num_experts * per_expert
    out["shared_experts"] += moe.num_shared_experts * per_expert


def _compressor(d: int, c: int, m: int) -> int:
    """wkv + wgate [coff*c, D] and ape [m, coff*c]; coff = 2 for the overlapping ratio 4."""
    coff = 2 if m == CSA_RATIO else 1
    return 2 * coff * c * d + m * coff * c
