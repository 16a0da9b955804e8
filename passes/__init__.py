"""v4c.passes: graph transformations, one module per pass, the manager and the pipeline.

`load_passes()` imports every pass module so the registry is complete; the manager calls it.
"""

from __future__ import annotations


def load_passes() -> None:
    from v4c.passes import (  # noqa: F401
        dce,
        fuse_attn_o,
        fuse_attn_q,
        fuse_gate_route,
        fuse_hc_norm,
        fuse_moe_hc,
        fuse_moe_route,
        fuse_norms,
        fuse_rope,
        lower,
        memory_plan,
        merge_linears,
        schedule_moe,
        select_outputs,
        shard,
        simulate_numerics,
    )
