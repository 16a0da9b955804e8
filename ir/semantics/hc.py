"""Manifold-constrained hyper-connections (mHC, V4_REFERENCE §2 and §3).

The residual of a V4 block is n parallel streams. Each sublayer collapses them into one input
(`hc_pre`), and writes its output back as a weighted expansion plus a doubly-stochastic mix of
the incoming streams (`hc_post`). The model's end collapses the streams once more without a
mix (`hc_head`); its start copies the embedding into every stream (`hc_expand`).

Everything here follows the official inference code, which is the authority where the HF
port differs: post/comb stay fp32 when mixing (HF rounds them to the model dtype first).
"""

from __future__ import annotations

import torch
from v4c.ir.semantics.invariant import matmul, sigmoid


def hc_expand(h: torch.Tensor, n: int) -> torch.Tensor:
    """The model's first residual: n identical copies of the embedding. [B,T,D] -> [B,T,n,D]."""
    return h.unsqueeze(2).repeat(1, 1, n, 1)


def _mix_logits(
    X: torch.Tensor, fn: torch.Tensor, norm_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The streams in fp32 and their projection by `fn`, scaled by the weightless RMS of all
    n*D values (official order: matmul first, then multiply by the reciprocal RMS)."""
    Xf = X.float()  # [B,T,n,D]
    flat = Xf.flatten(2)  # [B,T,n*D]
    rsqrt = torch.rsqrt(flat.square().mean(-1, keepdim=True) + norm_eps)  # [B,T,1]
    return Xf, matmul(flat, fn.float()) * rsqrt  # [B,T,n,D], [B,T,rows of fn]


def _collapse(pre: torch.Tensor, Xf: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x = sum_j pre_j X_j in fp32, cast to `dtype`. pre [B,T,n], Xf [B,T,n,D] -> [B,T,D]."""
    return (pre.unsqueeze(-1) * Xf).sum(dim=2).to(dtype)


def _sinkhorn(logits: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    """The official Sinkhorn projection of [..., n, n] logits: a row softmax plus eps, a column
    normalisation, then iters-1 (row, column) rounds; every normaliser gets + eps."""
    c = logits.softmax(dim=-1) + eps
    c = c / (c.sum(dim=-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        c = c / (c.sum(dim=-1, keepdim=True) + eps)
        c = c / (c.sum(dim=-2, keepdim=True) + eps)
    return c


def hc_pre(
    X: torch.Tensor,
    fn: torch.Tensor,
    base: torch.Tensor,
    scale: torch.Tensor,
    *,
    sinkhorn_iters: int,
    eps: float,
    norm_eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collapse the streams for a sublayer and compute its expand and mix weights (§3.1).

    X [B,T,n,D]; fn [(2+n)n, n*D], base [(2+n)n], scale [3] (fp32 parameters).
    Returns x [B,T,D] in X's dtype, post [B,T,n] fp32 and comb [B,T,n,n] fp32, where
    comb[..., j, k] weighs source stream j into destination stream k.
    """
    n = X.shape[2]
    Xf, m = _mix_logits(X, fn, norm_eps)  # m [B,T,(2+n)n]
    m_pre, m_post, m_comb = m.split([n, n, n * n], dim=-1)
    b_pre, b_post, b_comb = base.float().split([n, n, n * n])
    s_pre, s_post, s_comb = scale.float().unbind(0)
    pre = sigmoid(m_pre * s_pre + b_pre) + eps  # [B,T,n]
    post = 2 * sigmoid(m_post * s_post + b_post)  # [B,T,n]
    logits = (m_comb * s_comb + b_comb).unflatten(-1, (n, n))  # [B,T,n,n], row-major (j, k)
    comb = _sinkhorn(logits, sinkhorn_iters, eps)
    return _collapse(pre, Xf, X.dtype), post, comb


def hc_post(
    a: torch.Tensor, X: torch.Tensor, post: torch.Tensor, comb: torch.Tensor
) -> torch.Tensor:
    """The block-output streams X'_k = post_k a + sum_j comb[j,k] X_j (§3.2), mixed in fp32.

    a [B,T,D] sublayer output; X [B,T,n,D] the streams `hc_pre` read; post [B,T,n];
    comb [B,T,n,n]. Returns [B,T,n,D] in a's dtype (official: `.type_as(a)`).
    """
    expand = post.float().unsqueeze(-1) * a.float().unsqueeze(-2)  # [B,T,n,D]
    comb, Xf = comb.float(), X.float()
    mix = sum(comb[..., j, :, None] * Xf[..., j, None, :] for j in range(comb.shape[-1]))
    return (expand + mix).to(a.dtype)


def hc_head(
    X: torch.Tensor,
    fn: torch.Tensor,
    base: torch.Tensor,
    scale: torch.Tensor,
    *,
    eps: float,
    norm_eps: float,
) -> torch.Tensor:
    """The final collapse before the last RMSNorm (§3.3): pre weights only, no Sinkhorn.

    X [B,T,n,D]; fn [n, n*D], base [n], scale [1] (fp32). Returns y [B,T,D] in X's dtype.
    """
    Xf, m = _mix_logits(X, fn, norm_eps)  # m [B,T,n]
    pre = sigmoid(m * scale.float() + base.float()) + eps  # [B,T,n]
    return _collapse(pre, Xf, X.dtype)
