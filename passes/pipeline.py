"""The default pass pipeline, in order. Each entry says why it sits where it does."""

from __future__ import annotations

DEFAULT_PIPELINE = [
    # -- what to compute: first, so no later pass works on what will not run
    "select_outputs",  # drop unrequested outputs (the MTP block by default); last-token logits
    "dce",  # remove what only the dropped outputs used
    # -- one rank of a TP x EP grid (tp * ep > 1): before numerics, fusion and scheduling,
    # so roundings land on the split ops, no fusion spans a collective, and the MoE
    # schedule is sized for the rank's experts
    "shard",
    "simulate_numerics",  # numerics official: the §12 roundings as ops; before fusion sees them
    # -- fusion: rewrite rules to a fixpoint; they only change which op computes a value
    "fuse_hc_norm",  # HC post + next HC pre + RMSNorm: one pass over the 4 streams per boundary
    "fuse_rope",  # RoPE into the q/kv norms; after fuse_hc_norm so no norm is claimed twice
    "fuse_norms",  # the q and kv norms of a layer in one launch; needs fuse_rope's kv norm
    "fuse_attn_q",  # the per-head q norm + RoPE into the attention's q load; needs fuse_rope's
    "fuse_attn_o",  # the inverse RoPE into the attention's output store
    # -- scheduling
    "schedule_moe",  # explicit gate -> sort -> grouped GEMMs -> combine (+ shared expert)
    "fuse_moe_route",  # the gate and the sort in one launch; needs schedule_moe's ops
    "fuse_moe_hc",  # the combine into the next HC kernel; needs the route's rows, fuse_hc_norm
    "fuse_gate_route",  # the route into the gate GEMM's launch; after the passes that read it
    # the linears of one input in one launch; after every pass that finds a `linear` by kind
    "merge_linears",
    # -- memory and code generation: last, so they see the final set of values
    "memory_plan",  # static arena offsets for the prefill and decode entry points
    "lower",  # needs the memory plan; makes graph.meta["plan"]
]
