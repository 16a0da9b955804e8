"""Manifold-constrained hyper-connections on register tiles (V4_REFERENCE §3).

One token's n streams, D-block by D-block, are a [NP, BLOCK_D] fp32 tile (NP = n padded to a
power of two; rows >= n and columns >= D are 0). The projection of the flattened streams by
`fn` and their sum of squares come split over many programs (kernels/hc_split.py); the gates
and the n x n Sinkhorn then run on a few registers; the collapse reads the whole row at once.
hc_post alone mixes the streams D-block by D-block. The templates chain these pieces into the
unfused ops and the fused post + pre + RMSNorm kernels.
"""

import triton
import triton.language as tl


@triton.jit
def load_streams(
    x_ptr, tok, d0, N: tl.constexpr, D: tl.constexpr, NP: tl.constexpr, BLOCK_D: tl.constexpr
):
    """X[tok, :, d0:d0+BLOCK_D] of X [tokens, N, D] as a [NP, BLOCK_D] fp32 tile."""
    j = tl.arange(0, NP)[:, None]
    d = d0 + tl.arange(0, BLOCK_D)[None, :]
    x = tl.load(x_ptr + tok * (N * D) + j * D + d, mask=(j < N) & (d < D), other=0.0)
    return x.to(tl.float32)


@triton.jit
def store_streams(
    x_ptr, tile, tok, d0, N: tl.constexpr, D: tl.constexpr, NP: tl.constexpr, BLOCK_D: tl.constexpr
):
    """Write a [NP, BLOCK_D] tile into X [tokens, N, D] in X's dtype."""
    j = tl.arange(0, NP)[:, None]
    d = d0 + tl.arange(0, BLOCK_D)[None, :]
    x = tile.to(x_ptr.dtype.element_ty)
    tl.store(x_ptr + tok * (N * D) + j * D + d, x, mask=(j < N) & (d < D))


@triton.jit
def load_mix(post_ptr, comb_ptr, tok, N: tl.constexpr, NP: tl.constexpr):
    """A token's hc_post weights: post [NP] and comb [NP, NP] (fp32, padding 0)."""
    j = tl.arange(0, NP)
    post = tl.load(post_ptr + tok * N + j, mask=j < N, other=0.0).to(tl.float32)
    jj = j[:, None]
    kk = j[None, :]
    comb = tl.load(comb_ptr + tok * (N * N) + jj * N + kk, mask=(jj < N) & (kk < N), other=0.0)
    return post, comb.to(tl.float32)


@triton.jit
def mix_streams(
    a_ptr,
    x_ptr,
    tok,
    d0,
    post,
    comb,
    N: tl.constexpr,
    D: tl.constexpr,
    NP: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """hc_post on one D-block, fp32: X'_k = post_k a + sum_j comb[j, k] X_j -> [NP, BLOCK_D]."""
    x = load_streams(x_ptr, tok, d0, N, D, NP, BLOCK_D)  # [NP(j), BLOCK_D]
    d = d0 + tl.arange(0, BLOCK_D)
    a = tl.load(a_ptr + tok * D + d, mask=d < D, other=0.0).to(tl.float32)  # [BLOCK_D]
    mix = tl.sum(comb[:, :, None] * x[:, None, :], axis=0)  # [NP(j), NP(k), BLOCK_D] -> [NP(k), ..]
    return post[:, None] * a[None, :] + mix


@triton.jit
def take(m, idx, RP: tl.constexpr):
    """m[idx] for m [RP] and idx [P]: a register gather written as a masked sum."""
    r = tl.arange(0, RP)[None, :]
    return tl.sum(tl.where(idx[:, None] == r, m[None, :], 0.0), axis=1)


@triton.jit
def take2(m, idx, RP: tl.constexpr):
    """m[idx] for m [RP] and idx [P, Q]."""
    r = tl.arange(0, RP)[None, None, :]
    return tl.sum(tl.where(idx[:, :, None] == r, m[None, None, :], 0.0), axis=2)


@triton.jit
def gate(
    m, base_ptr, scale, first: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr
):
    """sigmoid(m[first + j] * scale + base[first + j]) for j < N, 0 on padding -> [NP]."""
    j = tl.arange(0, NP)
    b = tl.load(base_ptr + first + j, mask=j < N, other=0.0).to(tl.float32)
    return tl.where(j < N, tl.sigmoid(take(m, first + j, RP) * scale + b), 0.0)


@triton.jit
def comb_logits(m, base_ptr, scale, N: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr):
    """C[j, k] = m[2N + jN + k] * scale + base[2N + jN + k] (row-major, j source) -> [NP, NP]."""
    j = tl.arange(0, NP)[:, None]
    k = tl.arange(0, NP)[None, :]
    idx = 2 * N + j * N + k
    b = tl.load(base_ptr + idx, mask=(j < N) & (k < N), other=0.0).to(tl.float32)
    return take2(m, idx, RP) * scale + b


@triton.jit
def sinkhorn(logits, eps, ITERS: tl.constexpr, N: tl.constexpr, NP: tl.constexpr):
    """The official order on [NP, NP] logits: a row softmax + eps, a column normalisation,
    then ITERS-1 (row, column) rounds, every normaliser + eps. Padding stays 0."""
    j = tl.arange(0, NP)[:, None]
    k = tl.arange(0, NP)[None, :]
    x = tl.where(k < N, logits, float("-inf"))  # padded rows keep finite logits: no NaN
    e = tl.exp(x - tl.max(x, axis=1)[:, None])
    c = tl.where((j < N) & (k < N), e / tl.sum(e, axis=1)[:, None] + eps, 0.0)
    c = c / (tl.sum(c, axis=0)[None, :] + eps)
    for _ in range(ITERS - 1):
        c = c / (tl.sum(c, axis=1)[:, None] + eps)
        c = c / (tl.sum(c, axis=0)[None, :] + eps)
    return c


@triton.jit
def store_mix(post_ptr, comb_ptr, post, comb, tok, N: tl.constexpr, NP: tl.constexpr):
    """post [NP] -> post_ptr [tokens, N]; comb [NP, NP] -> comb_ptr [tokens, N, N]."""
    j = tl.arange(0, NP)
    tl.store(post_ptr + tok * N + j, post, mask=j < N)
    jj = j[:, None]
    kk = j[None, :]
    tl.store(comb_ptr + tok * (N * N) + jj * N + kk, comb, mask=(jj < N) & (kk < N))


@triton.jit
def load_rows(x_ptr, tok, N: tl.constexpr, D: tl.constexpr, NP: tl.constexpr, DP: tl.constexpr):
    """X[tok] of X [tokens, N, D] whole, in X's dtype: [NP, DP] (DP = D padded to a power of
    two; padding 0). Read from L2 (`.cg`): the split-K kernel reads streams that other
    programs of its launch wrote. Issued early, the loads overlap the Sinkhorn iterations."""
    j = tl.arange(0, NP)[:, None]
    d = tl.arange(0, DP)[None, :]
    mask = (j < N) & (d < D)
    return tl.load(x_ptr + tok * (N * D) + j * D + d, mask=mask, other=0.0, cache_modifier=".cg")


@triton.jit
def collapse(pre, x):
    """sum_j pre_j X_j in fp32: pre [NP], x [NP, DP] -> [DP]."""
    return tl.sum(pre[:, None] * x.to(tl.float32), axis=0)
