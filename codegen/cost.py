"""The lens's one cost model: an ESTIMATE of each launch's time on a target's card, and its
roofline. Constants are the card's (codegen/targets.py); the rule is this, and nothing else:

    roofline = max(bytes / HBM, flops / peak of the best MMA for the operands' type)
    estimate = max(bytes / (HBM * occ * width), flops / (peak(kind) * occ)) + launch
      occ   = min(1, CTAs / SMs)        a grid smaller than the SM count leaves SMs idle
      width = min(1, w / 16)            w: the mean width of the global load instructions
                                        in the SASS (bytes a thread, static count); 16-byte
                                        loads stream at full bandwidth, narrower ones
                                        proportionally less
      kind  = the kernel's MMA in its SASS; a kernel without one runs its flops at the FP32
              FMA rate (so a `tl.dot` that did not become MMA is slow, as it is)
      launch = one kernel node in a CUDA graph (the card's launch cost)
    bound = what the largest term is: memory, compute or launch, and "few CTAs" where that
    term is memory or compute and occ < 1/2 (the grid at least doubles it); flags name the
    shortfalls (few CTAs, narrow loads, dot without MMA).

Library launches (torch GEMMs) are estimated at their roofline plus the launch.

Bytes and flops come from the plan, per launch (`launch_bytes`, `launch_flops`): every
operand once at the bucket's (B, T); a weight as stored (FP8 1 byte + its block scales,
FP4 half a byte + its scales); a table indexed by token ids (the embedding, the hash gate's
table: any integer weight) only its B*T rows; stacked experts only min(E, B*T*K) experts;
a cache its B rows of its full length (the worst case, a full context).
Flops: 2 * rows * weight elements for every matrix an op multiplies by (rows = the token
rows of the launch's first activation: B*T, or B for the head's `lm_head_on_last`, which
takes each sequence's last token; B*T*K routed rows for stacked experts), plus
4*B*T*H*d*keys for attention and 2*B*T*(q width)*entries for the indexer's scores;
elementwise work counts none.
A launch that runs several Triton kernels splits its bytes and flops among them in
proportion to the bytes of their tensor arguments (the flops among those that call
`tl.dot`, when any does).
"""

from __future__ import annotations

from math import prod

from v4c.codegen.targets import Card
from v4c.ir.plan import Launch, Plan, Ref
from v4c.ir.types import resolve_dim
from v4c.ir.weights import WeightFormat

RULE = (
    "estimate = max(bytes / (HBM x occ x width), flops / (peak of its MMA kind x occ)) + "
    "launch; occ = min(1, CTAs / SMs), width = min(1, mean global load bytes / 16)"
)


def format_bytes(fmt: WeightFormat | str, activations: str) -> float:
    """Bytes an element of a weight format or IR dtype takes (`bf16` is the activations')."""
    if isinstance(fmt, WeightFormat):
        if fmt.quantised:
            (bo, bi), value = fmt.block, (1 if fmt.kind == "fp8" else 0.5)
            return value + 1 / (bo * bi)  # one E8M0 scale byte per block
        fmt = fmt.dtype
    if fmt == "bf16":
        return 4 if activations == "fp32" else 2
    return {"fp32": 4, "i64": 8, "i32": 4, "u8": 1, "i8": 1, "bool": 1}.get(fmt, 4)


def _shape(ref: Ref, env: dict[str, int]) -> tuple[int, ...]:
    return tuple(resolve_dim(d, env) for d in (ref.dims or ref.shape))


def _routed_rows(launch: Launch, env: dict[str, int]) -> int | None:
    """B*T*K: the rows of a routed launch (its i64 [B, T, K] operand), else None."""
    for ref in launch.inputs:
        if ref.dtype == "i64" and len(ref.dims) == 3 and tuple(ref.dims[:2]) == ("B", "T"):
            return prod(_shape(ref, env))
    return None


def _looked_up(launch: Launch, ref: Ref) -> bool:
    """A table indexed by token ids: the embedding, or an integer table (the hash gate's)."""
    return launch.op == "embed" or ref.dtype in ("i64", "i32")


def _stack(plan: Plan, ref: Ref) -> int:
    """The experts a weight stacks on dim 0 (0: none, or not a plan weight)."""
    weight = plan.params.get(ref.name)
    return weight.stack if weight is not None else 0


def _param_elements(launch: Launch, ref: Ref, plan: Plan, env: dict[str, int]) -> float:
    """The elements of a weight a step touches (see the module docstring)."""
    rows = env["B"] * env["T"]
    if _looked_up(launch, ref):
        return min(rows, ref.shape[0]) * prod(ref.shape[1:])
    stack = _stack(plan, ref)
    routed = _routed_rows(launch, env)
    if stack and routed is not None:
        return min(stack, routed) * prod(ref.shape[1:])
    return prod(ref.shape)


def launch_bytes(launch: Launch, plan: Plan, env: dict[str, int]) -> float:
    """Bytes one call reads and writes (each operand once)."""
    act = plan.options["dtype"]
    total, seen = 0.0, set()
    for ref in (*launch.inputs, *launch.outputs):
        if (ref.kind, ref.name) in seen:
            continue
        seen.add((ref.kind, ref.name))
        if ref.kind == "param":
            weight = plan.params.get(ref.name)
            fmt = weight.format if weight is not None else ref.dtype
            total += _param_elements(launch, ref, plan, env) * format_bytes(fmt, act)
        elif ref.kind == "state":
            shape = _shape(ref, {**env, "N": env["B"]})  # the step's B rows of the cache
            total += prod(shape) * format_bytes(ref.dtype, act)
        else:
            total += prod(_shape(ref, env)) * format_bytes(ref.dtype, act)
    return total


def _token_rows(launch: Launch, env: dict[str, int]) -> int:
    """The (B, T') rows of the launch's first activation [B, T', ...] (T' = 1 where it takes
    each sequence's last token), else B*T."""
    for ref in launch.inputs:
        if ref.kind not in ("param", "state") and len(ref.dims) >= 3 and ref.dims[0] == "B":
            return prod(_shape(ref, env)[:2])
    return env["B"] * env["T"]


def launch_flops(launch: Launch, plan: Plan, env: dict[str, int]) -> float:
    rows = _token_rows(launch, env)
    routed = _routed_rows(launch, env)
    flops = 0.0
    for ref in launch.inputs:
        if ref.kind != "param" or len(ref.shape) < 2:
            continue
        if _looked_up(launch, ref):
            continue  # a table looked up, not multiplied
        stack = _stack(plan, ref)
        if stack and routed is not None:
            flops += 2 * routed * prod(ref.shape[1:])
        else:
            flops += 2 * rows * prod(ref.shape)
    states = [prod(_shape(r, {**env, "N": 1})) // max(r.shape[-1], 1) for r in launch.inputs
              if r.kind == "state"]  # fmt: skip
    if launch.op in ("sparse_attention", "sparse_attention_rope"):  # the latter: + its RoPE
        q = _shape(launch.inputs[0], env)  # [B, T, H, d]
        keys = launch.constants.get("window", 0)
        if routed is not None:
            keys += _shape(next(r for r in launch.inputs if r.dtype == "i64" and
                                len(r.dims) == 3), env)[-1]  # fmt: skip
        elif len(states) > 1:
            keys += states[-1]  # every compressed entry
        flops += 4 * prod(q) * keys
    if launch.op == "indexer_topk" and states:
        q_width = next((r.shape[0] for r in launch.inputs if r.kind == "param"), 0)
        flops += 2 * rows * q_width * states[-1]
    return flops


def split(total: float, weights: list[float], only: list[bool] | None = None) -> list[float]:
    """`total` in proportion to `weights`, among the `only` ones if any is."""
    if only and any(only):
        weights = [w if o else 0.0 for w, o in zip(weights, only)]
    whole = sum(weights)
    return [total * w / whole if whole else total / len(weights) for w in weights]


def mean_width(loads: dict) -> float | None:
    """Bytes a global load instruction moves a thread, averaged over the static count."""
    count = sum(loads.values())
    return sum(int(w) * n for w, n in loads.items()) / count if count else None


def best_peak(card: Card, dtype: str) -> tuple[str, float]:
    """The fastest MMA kind of the card for operands of `dtype` (fma fp32 if none)."""
    kinds = [(card.peak[k], k) for k in card.peak if k.split()[1] == dtype and k[0] != "f"]
    peak, kind = max(kinds, default=(card.peak["fma fp32"], "fma fp32"))
    return kind, peak


def estimate(card: Card, nbytes: float, flops: float, ctas: int, facts: dict) -> dict:
    """The estimate of one Triton kernel call (see the module docstring)."""
    occ = min(1.0, ctas / card.sms)
    width = mean_width(facts.get("loads", {}))
    wf = min(1.0, width / 16) if width else 1.0
    mma = facts.get("mma", {})
    kind = max(mma, key=mma.get) if mma else "fma fp32"
    dot_types = facts.get("dots", {})
    op_type = max(dot_types, key=dot_types.get) if dot_types else kind.split()[1]
    t_mem = nbytes / (card.hbm_bytes_s * occ * wf)
    t_cmp = flops / (card.flops_s(kind) * occ)
    flags = []
    if occ < 1:
        flags.append(f"few CTAs ({ctas} < {card.sms} SMs)")
    if wf < 1:
        flags.append(f"narrow loads ({width:.1f} B)")
    if dot_types and not mma and op_type != "fp32":
        flags.append("dot without MMA")
    result = _result(card, nbytes, flops, t_mem, t_cmp, best_peak(card, op_type)[1], flags)
    if result["bound"] != "launch" and occ < 0.5:
        result["bound"] = "few CTAs"
    return result


def estimate_library(card: Card, nbytes: float, flops: float, dtype: str) -> dict:
    """A library GEMM at its roofline (cuBLAS is taken to reach it) plus the launch."""
    peak = best_peak(card, dtype)[1]
    return _result(card, nbytes, flops, nbytes / card.hbm_bytes_s, flops / peak, peak, [])


def _result(card, nbytes, flops, t_mem, t_cmp, peak, flags) -> dict:
    work = max(t_mem, t_cmp)
    bound = "launch" if card.launch_s >= work else "memory" if t_mem >= t_cmp else "compute"
    return {
        "bytes": round(nbytes),
        "flops": round(flops),
        "est_us": (work + card.launch_s) * 1e6,
        "roofline_us": max(nbytes / card.hbm_bytes_s, flops / peak) * 1e6,
        "bound": bound,
        "flags": flags,
    }
