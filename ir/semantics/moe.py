"""The MoE block (V4_REFERENCE §10): gates, the SwiGLU expert, the routed sum, and the
pieces of a dispatch schedule.

`moe` is the unfused definition: a loop over experts, each applied to the tokens that chose
it. A scheduled MoE instead sorts the token slots by expert (`moe_sort`), runs one GEMM
group per expert over the sorted slots (`grouped_swiglu`), and scatter-adds the results back
(`moe_combine`); the three compose to `moe`, which is how fused kernels are checked.

Official numerics, where the HF port differs: the top-k weights are normalised without an
epsilon, and the routing weight multiplies the SwiGLU activation before w2 (HF: after the
down projection). Each expert output is rounded to the input dtype and accumulated in fp32,
as the official loop does. The shared expert is a plain `swiglu` call without a weight.

Shapes: N = B*T flattened tokens (legend in `ir.semantics`).
"""

from __future__ import annotations

import torch

from v4c.ir.semantics.quant import act_quant_fp8, round_to
from v4c.ir.semantics.invariant import matmul, sigmoid, silu, softplus

SCORING_FUNCS = ("sqrtsoftplus", "sigmoid", "softmax")


def router_logits(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The router's logits z = x Wgᵀ [N,E] in fp32 (§10 step 1)."""
    return matmul(x.float(), weight.float())


def _scores(z: torch.Tensor, scoring_func: str) -> torch.Tensor:
    """Router scores s [N,E] fp32 from the fp32 logits z."""
    if scoring_func == "sqrtsoftplus":
        return softplus(z).sqrt()
    if scoring_func == "sigmoid":
        return sigmoid(z)
    if scoring_func == "softmax":
        return z.softmax(dim=-1)
    raise ValueError(f"unknown scoring_func {scoring_func!r}; expected one of {SCORING_FUNCS}")


def _route_weights(
    scores: torch.Tensor, idx: torch.Tensor, route_scale: float, scoring_func: str, norm: bool
) -> torch.Tensor:
    """The unbiased scores of the chosen experts, normalised over the K picks (never for
    softmax scores, which are normalised over all E already), times route_scale. -> [N,K]."""
    w = scores.gather(1, idx)  # [N,K]
    if norm and scoring_func != "softmax":
        w = w / w.sum(dim=-1, keepdim=True)
    return w * route_scale


def score_gate(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    top_k: int,
    route_scale: float,
    scoring_func: str = "sqrtsoftplus",
    norm_topk_prob: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Learned routing: idx = top-k of (scores + bias); the bias picks, it never weighs.

    x [N,D], weight [E,D], bias [E]. Returns weights [N,K] fp32 and idx [N,K] int64, the
    experts in descending order of biased score.
    """
    return score_route(
        router_logits(x, weight), bias, top_k=top_k, route_scale=route_scale,
        scoring_func=scoring_func, norm_topk_prob=norm_topk_prob,
    )  # fmt: skip


def score_route(
    z: torch.Tensor,
    bias: torch.Tensor,
    *,
    top_k: int,
    route_scale: float,
    scoring_func: str = "sqrtsoftplus",
    norm_topk_prob: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`score_gate` from the router's logits z [N,E] fp32."""
    scores = _scores(z, scoring_func)  # [N,E]
    idx = (scores + bias.float()).topk(top_k, dim=-1).indices  # [N,K]
    return _route_weights(scores, idx, route_scale, scoring_func, norm_topk_prob), idx


def hash_gate(
    x: torch.Tensor,
    ids: torch.Tensor,
    weight: torch.Tensor,
    tid2eid: torch.Tensor,
    *,
    route_scale: float,
    scoring_func: str = "sqrtsoftplus",
    norm_topk_prob: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hash routing (the first layers): the token id picks the experts through the fixed
    table tid2eid; the router still weighs them.

    x [N,D], ids [N] token ids, weight [E,D], tid2eid [V,K]. Returns weights [N,K] fp32 and
    idx [N,K] int64.
    """
    return hash_route(
        router_logits(x, weight), ids, tid2eid, route_scale=route_scale,
        scoring_func=scoring_func, norm_topk_prob=norm_topk_prob,
    )  # fmt: skip


def hash_route(
    z: torch.Tensor,
    ids: torch.Tensor,
    tid2eid: torch.Tensor,
    *,
    route_scale: float,
    scoring_func: str = "sqrtsoftplus",
    norm_topk_prob: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`hash_gate` from the router's logits z [N,E] fp32."""
    scores = _scores(z, scoring_func)  # [N,E]
    idx = tid2eid[ids].long()  # [N,K]
    return _route_weights(scores, idx, route_scale, scoring_func, norm_topk_prob), idx


def local_experts(
    weights: torch.Tensor, idx: torch.Tensor, first: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing on one expert-parallel rank, which holds experts first .. first+count-1:
    (weights [N,K], idx [N,K] local ids) with every pick of another rank's expert sent to
    the empty group `count` at weight 0, so this rank adds nothing for it (the other rank
    does, and the all-reduce after the MoE sums them). first: [1] int64."""
    local = idx - first
    mine = (local >= 0) & (local < count)
    return weights * mine, torch.where(mine, local, count)


def swiglu(
    x: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    w3: torch.Tensor,
    *,
    limit: float,
    scale: torch.Tensor | None = None,
    act_quant: bool = False,
) -> torch.Tensor:
    """One clamped SwiGLU expert: w2 (scale * silu(min(w1 x, limit)) * clamp(w3 x, +-limit)).

    x [N,D], w1 [I,D] (gate), w2 [D,I] (down), w3 [I,D] (up); limit 0 means no clamp;
    scale [N] is the routing weight, applied to the activation before w2 as officially.
    `act_quant` (numerics: official): the expert GEMMs compute as the official FP8/FP4 GEMMs
    do: their inputs rounded to FP8 (128-wide blocks; h first cast to x's dtype) and their
    outputs written in x's dtype, so w1 x and w3 x are rounded to bf16 in a bf16 run before
    the fp32 SwiGLU (V4_REFERENCE §12.1). Without it w1 x and w3 x stay fp32.
    Returns [N,D] in x's dtype.
    """
    if act_quant:
        x = act_quant_fp8(x)
    xf = x.float()
    gate = matmul(xf, w1.float())  # [N,I]
    up = matmul(xf, w3.float())  # [N,I]
    if act_quant:  # official: the w1 and w3 GEMMs write bf16, cast to fp32 for the SwiGLU
        gate, up = round_to(gate, x.dtype), round_to(up, x.dtype)
    if limit > 0:
        gate = gate.clamp(max=limit)
        up = up.clamp(min=-limit, max=limit)
    h = silu(gate) * up  # [N,I]
    if scale is not None:
        h = scale.float().unsqueeze(-1) * h
    if act_quant:
        h = act_quant_fp8(h.to(x.dtype)).float()
    return matmul(h, w2.float()).to(x.dtype)


def moe(
    x: torch.Tensor,
    weights: torch.Tensor,
    idx: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    w3: torch.Tensor,
    *,
    limit: float,
    act_quant: bool = False,
) -> torch.Tensor:
    """The routed experts, unfused: y_t = sum_k swiglu_{idx[t,k]}(x_t) scaled by weights[t,k].

    x [N,D], weights [N,K], idx [N,K], w1 [E,I,D], w2 [E,D,I], w3 [E,I,D]. Experts run in
    index order, each output in x's dtype, summed in fp32. Returns [N,D] in x's dtype.
    """
    y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)  # [N,D]
    for e in range(w1.shape[0]):
        tok, k = torch.where(idx == e)  # the token slots routed to expert e (maybe none)
        out = swiglu(
            x[tok], w1[e], w2[e], w3[e], limit=limit, scale=weights[tok, k], act_quant=act_quant
        )
        y.index_add_(0, tok, out.float())
    return y.to(x.dtype)


def moe_sort(idx: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group the token slots by expert: slot s = t*K + k is token t's k-th pick.

    idx [N,K] -> order [N*K] int64 (slots sorted by expert, stable, so token order within a
    group), offsets [E+1] int64 (expert e's slots are order[offsets[e]:offsets[e+1]]).
    """
    flat = idx.reshape(-1)  # [N*K]
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=num_experts)  # [E]
    offsets = torch.zeros(num_experts + 1, dtype=torch.int64, device=idx.device)
    offsets[1:] = torch.cumsum(counts, dim=0)
    return order, offsets


def grouped_swiglu(
    x: torch.Tensor,
    order: torch.Tensor,
    offsets: torch.Tensor,
    weights: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    w3: torch.Tensor,
    *,
    limit: float,
    act_quant: bool = False,
    slots: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every expert group of the sorted slots through its SwiGLU, routing weight before w2.

    x [N,D], order [N*K], offsets [E+1], weights [N,K], w1 [E,I,D], w2 [E,D,I], w3 [E,I,D].
    Returns y_sorted [N*K,D] in x's dtype: row i is the output of slot order[i]. Rows past
    the E experts' groups (offsets may end with one more group: the slots of experts another
    expert-parallel rank holds, `local_experts`) are 0.

    With no more slots than experts (a decode step) each slot gathers its expert's weights
    by index, so nothing is read on the host (a CUDA graph can hold the step); otherwise
    each expert's contiguous group runs at once, its bounds read from `offsets`.

    `slots` [E] (expert offload, `runtime.offload`): expert e's weights are w1[slots[e]] of a
    bank of resident and fetched experts, and an expert at slot -1 is skipped (rows of 0).
    """
    k = weights.shape[1]
    experts = w1.shape[0] if slots is None else slots.numel()
    if slots is None:
        slots = torch.arange(experts, device=order.device)
    flat_w = weights.reshape(-1)  # [N*K]
    y = torch.zeros((order.numel(), x.shape[1]), dtype=x.dtype, device=x.device)  # [N*K,D]
    if order.numel() <= experts:
        positions = torch.arange(order.numel(), device=order.device)
        expert = torch.searchsorted(offsets[1:], positions, right=True)  # [N*K] sorted slot's
        mine = (expert < experts).to(x.dtype)  # [N*K] 0 on the other ranks' slots
        expert = slots.index_select(0, expert.clamp(max=experts - 1))
        mine = mine * (expert >= 0).to(x.dtype)
        expert = expert.clamp(min=0)
        for i in range(order.numel()):
            e, slot = expert[i : i + 1], order[i : i + 1]
            out = swiglu(
                x.index_select(0, slot // k),
                w1.index_select(0, e)[0],
                w2.index_select(0, e)[0],
                w3.index_select(0, e)[0],
                limit=limit,
                scale=flat_w.index_select(0, slot),
                act_quant=act_quant,
            )
            y[i : i + 1] = out * mine[i : i + 1, None]
        return y
    for e in range(experts):
        lo, hi, at = int(offsets[e]), int(offsets[e + 1]), int(slots[e])
        if at < 0:
            continue
        picks = order[lo:hi]
        y[lo:hi] = swiglu(
            x[picks // k],
            w1[at],
            w2[at],
            w3[at],
            limit=limit,
            scale=flat_w[picks],
            act_quant=act_quant,
        )
    return y


def moe_combine(y_sorted: torch.Tensor, order: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Scatter-add the sorted slot outputs back to their tokens, in fp32.

    y_sorted [N*K,D], order [N*K] -> [N,D] in y_sorted's dtype.
    """
    k = order.numel() // max(n_tokens, 1)
    y = torch.zeros((n_tokens, y_sorted.shape[1]), dtype=torch.float32, device=y_sorted.device)
    y.index_add_(0, order // k, y_sorted.float())
    return y.to(y_sorted.dtype)


def sorted_rows(order: torch.Tensor) -> torch.Tensor:
    """Each slot's row in the sorted order: the inverse permutation of order [N*K] -> [N*K]."""
    rows = torch.empty_like(order)
    rows[order] = torch.arange(order.numel(), dtype=order.dtype, device=order.device)
    return rows


def moe_gather(y_sorted: torch.Tensor, rows: torch.Tensor, top_k: int) -> torch.Tensor:
    """The combine from the sorted rows' side: token t's K outputs y_sorted[rows[t*K + k]]
    summed in fp32 in pick order (k = 0, 1, ...). y_sorted [N*K,D], rows [N*K] -> [N,D] fp32."""
    picks = y_sorted.index_select(0, rows).view(-1, top_k, y_sorted.shape[1])  # [N,K,D]
    acc = torch.zeros_like(picks[:, 0], dtype=torch.float32)
    for k in range(top_k):
        acc += picks[:, k].float()
    return acc
