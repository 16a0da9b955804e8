"""MoE routing on register tiles: router scores and top-k (the gate), the counting sort of
token slots by expert (the dispatch), and the gather of expert outputs back to their tokens
(the combine). Integer work is exact and fp32 sums run in a fixed order: no result depends on
the order programs run in.

Legend: E experts (BLOCK_E >= E lanes), K picks per token, a slot s = t*K + k is token t's
k-th pick; a chunk is BLOCK consecutive slots; NB >= E + 1 histogram bins (bin E collects
the padding lanes of the last chunk).
"""

import triton
import triton.language as tl


@triton.jit
def softplus(z):
    """log(1 + e^z) as torch computes it (z itself above the threshold 20), written as
    max(z, 0) + log1p(e^-|z|) with an accurate log1p: exact to fp32 for very negative z."""
    u = tl.exp(-tl.abs(z))
    w = 1.0 + u
    log1p = tl.where(w == 1.0, u, tl.log(w) * u / tl.where(w == 1.0, 1.0, w - 1.0))
    return tl.where(z > 20.0, z, tl.maximum(z, 0.0) + log1p)


@triton.jit
def router_scores(z, on, SCORING: tl.constexpr):
    """Scores [BLOCK_E] fp32 from router logits z (lanes off `on` are padding)."""
    if SCORING == "sqrtsoftplus":
        s = tl.sqrt(softplus(z))
    elif SCORING == "sigmoid":
        s = tl.sigmoid(z)
    else:  # softmax over the E real lanes
        z = tl.where(on, z, float("-inf"))
        p = tl.exp(z - tl.max(z, axis=0))
        s = p / tl.sum(p, axis=0)
    return tl.where(on, s, 0.0)


@triton.jit
def top_k(key, cols, K: tl.constexpr, BLOCK_K: tl.constexpr):
    """The lanes of the K largest keys [BLOCK_E] in descending order (a tie goes to the
    lower lane); padding lanes must hold -inf. -> idx [BLOCK_K] int32, 0 past K."""
    kk = tl.arange(0, BLOCK_K)
    idx = tl.zeros([BLOCK_K], dtype=tl.int32)
    for k in tl.static_range(K):
        best = tl.max(key, axis=0)
        pick = tl.min(tl.where(key == best, cols, 1 << 30), axis=0)
        idx = tl.where(kk == k, pick, idx)
        key = tl.where(cols == pick, float("-inf"), key)
    return idx


@triton.jit
def gather_lanes(v, cols, idx):
    """v[idx] for a register vector v [BLOCK_E] and lane ids idx [BLOCK_K] -> [BLOCK_K]."""
    return tl.sum(tl.where(cols[None, :] == idx[:, None], v[None, :], 0.0), axis=1)


@triton.jit
def route_token(row, z_ptr, bias_ptr, ids_ptr, tid2eid_ptr, first_ptr, w_ptr, idx_ptr,
                route_scale, E: tl.constexpr, K: tl.constexpr, HASH: tl.constexpr,
                SCORING: tl.constexpr, NORM: tl.constexpr, LOCAL: tl.constexpr,
                BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """The gate of token `row` (int64): its router logits z [E] fp32 to its K picks' weights
    (fp32) and expert ids (int64), stored at [row, :K] of w and idx. Score gate: the top-K of
    score + bias; hash gate: tid2eid[token id]. LOCAL > 0 (expert parallelism): the ids are
    local to the rank holding experts first..first+LOCAL-1, another rank's pick is id LOCAL
    at weight 0."""
    cols = tl.arange(0, BLOCK_E)
    on = cols < E
    z = tl.load(z_ptr + row * E + cols, mask=on, other=0.0)  # [BLOCK_E] logits
    s = router_scores(z, on, SCORING)
    kk = tl.arange(0, BLOCK_K)
    if HASH:
        token = tl.load(ids_ptr + row).to(tl.int64)
        idx = tl.load(tid2eid_ptr + token * K + kk, mask=kk < K, other=0).to(tl.int32)
    else:
        bias = tl.load(bias_ptr + cols, mask=on, other=0.0).to(tl.float32)
        idx = top_k(tl.where(on, s + bias, float("-inf")), cols, K, BLOCK_K)
    w = tl.where(kk < K, gather_lanes(s, cols, idx), 0.0)  # [BLOCK_K]
    if NORM:
        w = w / tl.sum(w, axis=0)
    if LOCAL > 0:
        local = idx - tl.load(first_ptr).to(tl.int32)
        mine = (local >= 0) & (local < LOCAL)
        w = tl.where(mine, w, 0.0)
        idx = tl.where(mine, local, LOCAL)
    tl.store(w_ptr + row * K + kk, w * route_scale, mask=kk < K)
    tl.store(idx_ptr + row * K + kk, idx.to(tl.int64), mask=kk < K)


@triton.jit
def chunk_experts(idx_ptr, chunk, n, E: tl.constexpr, BLOCK: tl.constexpr):
    """The experts of chunk `chunk`'s slots -> (slot ids [BLOCK], experts [BLOCK] int32,
    E on the padding lanes past the n slots, and the lane mask)."""
    slot = chunk * BLOCK + tl.arange(0, BLOCK)
    on = slot < n
    e = tl.load(idx_ptr + slot, mask=on, other=E).to(tl.int32)
    return slot, e, on


@triton.jit
def counting_sort(idx_ptr, order_ptr, offsets_ptr, rows_ptr, n, E: tl.constexpr,
                  NB: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):  # fmt: skip
    """Slots 0..n-1 sorted stably by expert, in one program: the experts' totals over every
    chunk, offsets [E+1] (int64, their exclusive scan), then each chunk's slots to their
    expert's next free places (in order: a slot's place is its expert's running start plus
    its rank among the chunk's earlier slots of that expert) -> order [n] (int64); with
    ROWS, also each slot's place, rows [n] (int64: the inverse permutation of order)."""
    bins = tl.arange(0, NB)
    chunks = tl.cdiv(n, BLOCK)
    total = tl.zeros([NB], dtype=tl.int32)
    for c in range(chunks):
        total += tl.histogram(chunk_experts(idx_ptr, c, n, E, BLOCK)[1], NB)
    start = tl.cumsum(total, axis=0) - total  # start[E] = every real slot, the padding bin last
    tl.store(offsets_ptr + bins, start.to(tl.int64), mask=bins <= E)
    for c in range(chunks):
        slot, e, on = chunk_experts(idx_ptr, c, n, E, BLOCK)
        place = tl.gather(start, e, 0) + rank_in_chunk(e, BLOCK)
        tl.store(order_ptr + place, slot.to(tl.int64), mask=on)
        if ROWS:
            tl.store(rows_ptr + slot, place.to(tl.int64), mask=on)
        start += tl.histogram(e, NB)


@triton.jit
def rank_in_chunk(e, BLOCK: tl.constexpr):
    """For each lane, the number of earlier lanes with the same expert: its place among the
    chunk's slots of that expert, in slot order (what makes the sort stable). -> [BLOCK]."""
    i = tl.arange(0, BLOCK)
    same = (e[:, None] == e[None, :]) & (i[None, :] < i[:, None])  # [BLOCK, BLOCK]
    return tl.sum(same.to(tl.int32), axis=1)


@triton.jit
def gather_slots(y_ptr, inv_ptr, token, d, on, D: tl.constexpr, K: tl.constexpr):
    """sum_k y[inv[token*K + k], d] in fp32, k in order: a token's K expert outputs read back
    from the sorted rows through the inverse permutation inv. -> [BLOCK_D]."""
    acc = tl.zeros(d.shape, dtype=tl.float32)
    for k in tl.static_range(K):
        row = tl.load(inv_ptr + token * K + k)
        acc += tl.load(y_ptr + row * D + d, mask=on, other=0.0).to(tl.float32)
    return acc
