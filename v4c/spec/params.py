"""Parameter counts by part, summed over `checkpoint_tensors` (V4_REFERENCE §13.1).

A parameter is one weight element, whatever its stored format (an FP4 expert weight counts
once per element, not per byte); block scales and the int64 `tid2eid` tables are not
parameters. "Active per token" is what one decode token reads: every dense tensor, the
lm_head, the shared experts and `top_k` of the routed experts of each layer; the embedding
is left out (one row is gathered, no matmul) and so is MTP (its own line).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from v4c.spec.schema import ModelSpec
from v4c.spec.tensors import checkpoint_tensors

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
    main, mtp = Counter(), Counter()
    for t in checkpoint_tensors(spec):
        if t.part != "tables":
            (mtp if t.name.startswith("mtp.") else main)[t.part] += t.numel
    e, k = spec.moe.num_experts, spec.moe.top_k

    def skipped(parts: Counter) -> int:  # the routed experts a token does not use
        return parts["routed_experts"] * (e - k) // e

    return ParamCount(
        by_part={part: main[part] for part in PARTS},
        mtp=sum(mtp.values()),
        active=sum(main.values()) - main["embedding"] - skipped(main),
        active_mtp=sum(mtp.values()) - skipped(mtp),
    )
