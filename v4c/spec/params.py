"""Parameter counts by part, summed over `checkpoint_tensors` (V4_REFERENCE §13.1).

A parameter is one weight element, whatever its stored format (an FP4 expert weight counts
once per element, not per byte); block scales and the int64 `tid2eid` tables are not
parameters. "Active per token" is what one decode token reads (`active_share`, also the
rule of the bytes read per decode token in report.md): every dense tensor, the lm_head, the
shared experts, `top_k` of the routed experts of each layer and the one gathered row of the
embedding; MTP is its own line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from v4c.spec.schema import ModelSpec
from v4c.spec.tensors import TensorInfo, checkpoint_tensors

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


def active_share(t: TensorInfo, spec: ModelSpec) -> Fraction:
    """The share of tensor `t` that one decode token reads: `top_k` of the stacked routed
    experts, one row of a gathered table (the embedding, the hash gate's `tid2eid`), all of
    any other tensor."""
    if t.stack:
        return Fraction(spec.moe.top_k, t.stack)
    if t.part in ("embedding", "tables"):
        return Fraction(1, t.shape[0])
    return Fraction(1)


def count_params(spec: ModelSpec) -> ParamCount:
    by_part, total, active = Counter(), Counter(), Counter()  # total, active: main and mtp
    for t in checkpoint_tensors(spec):
        if t.part == "tables":
            continue
        block = "mtp" if t.name.startswith("mtp.") else "main"
        if block == "main":
            by_part[t.part] += t.numel
        total[block] += t.numel
        active[block] += t.numel * active_share(t, spec)
    return ParamCount(
        by_part={part: by_part[part] for part in PARTS},
        mtp=total["mtp"],
        active=int(active["main"]),
        active_mtp=int(active["mtp"]),
    )
