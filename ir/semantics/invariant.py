"""Batch-invariant matrix products for the torch backend: a row's result never depends on how
many other rows share the call, so a token gets bitwise the same values alone (a decode step),
inside a verify step, a prefill chunk or a batch of sequences (DESIGN.md, batch invariance).

Why torch.mm is not: the BLAS picks its algorithm from the problem's shape. MKL computes
M = 1 as a gemv and M >= 2 as a gemm with a different accumulation order, and with threads
it also changes the split for some M (measured on an AMD EPYC with MKL 2024.2: rows of
M = 2, 3, 5, 6, 7, 9, 10, 11 differ in the last bit from the same rows in M = 130).

What makes this one invariant: every BLAS call has one fixed shape, [ROWS, K] x [K, N], the
rows padded to a multiple of ROWS. A BLAS is a deterministic function of its shape, strides,
thread count and CPU (its kernel choice, blocking and thread split are decided from those
alone), so every call for one weight takes the same path on any x86-64 CPU. Inside one call,
a row's K reduction does not depend on which of the ROWS positions it sits in: GEMM kernels
run the K loop outside the row tiling (a row is a register or SIMD lane of the same rank-1
updates, an edge tile a masked copy of them). That last point is the BLAS's behaviour, not a
documented contract: tests/ir/semantics/test_invariant.py checks it on the machine that runs
the suite (every position of a block, M = 1..15, 1 and 2 threads), so a BLAS that breaks it
fails there rather than silently.

ROWS = 4: a verify step's K + 1 <= 4 rows are one call, as a decode step's one row is, so
verifying costs what decoding does. Cost: a lone row pays for 4 rows of arithmetic (measured
in BENCHMARKS.md); a long prefill makes M / 4 calls.

An fp32 weight of WIDE rows or more (a vocabulary) takes the transposed call, W [N, K] x
blockᵀ [K, ROWS] -> [N, ROWS]: given block x Wᵀ, MKL's sgemm repacks the whole weight each
call (one thread, the tiny model's lm_head, N = 129280, K = 256: 30.4 ms for 4 rows, where
x Wᵀ at 1 row took 18 ms), given W x blockᵀ it streams it once (12.8 ms). Below WIDE rows,
and in bf16 (another kernel), the direct call is as fast or faster (the table in
BENCHMARKS.md). The choice is the weight's shape and dtype: one path per weight, still.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ROWS = 4  # rows per BLAS call; fixed, so the call's shape never depends on the batch
WIDE = 16384  # fp32 weights of this many rows or more go through the BLAS transposed


def transposed(n: int, dtype: torch.dtype) -> bool:
    """Whether the products with an [n, K] weight of `dtype` are taken as W x blockᵀ."""
    return dtype == torch.float32 and n >= WIDE


def matmul(x: Tensor, w: Tensor) -> Tensor:
    """x [..., K] @ w[N, K]ᵀ -> [..., N] in x's dtype (torch.mm's accumulation), row by row
    invariant: the rows go through the BLAS in zero-padded blocks of exactly ROWS."""
    m = math.prod(x.shape[:-1])
    flat = x.reshape(m, x.shape[-1])
    if m == 0:  # (an expert no token was routed to)
        return x.new_empty(*x.shape[:-1], w.shape[0])
    padded = torch.cat((flat, flat.new_zeros(-m % ROWS, flat.shape[1])))  # [M', K], M' % ROWS = 0
    out = torch.cat([block_product(block, w) for block in padded.split(ROWS)])[:m]
    return out.view(*x.shape[:-1], w.shape[0])


def block_product(block: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """block [ROWS, K] x w [N, K]ᵀ -> [ROWS, N] by the one BLAS call this weight takes (W x
    blockᵀ where `transposed`, into `out` [N, ROWS], and a transposed view of it returned;
    else into `out` [ROWS, N])."""
    if transposed(w.shape[0], w.dtype):
        return torch.mm(w, block.T, out=out).T
    return torch.mm(block, w.T, out=out)


class RowBlocks:
    """The staging buffers of one product shape, made once (a bound step allocates nothing):
    `block` [ROWS, K] takes the rows, `result` the BLAS's output, [ROWS, N] (or [N, ROWS]
    where `transposed`): `matmul`'s calls (`block_product`), the same bits."""

    def __init__(self, k: int, n: int, dtype: torch.dtype, device: torch.device) -> None:
        self.block = torch.zeros(ROWS, k, dtype=dtype, device=device)
        self.wide = transposed(n, dtype)
        self.result = torch.empty(*((n, ROWS) if self.wide else (ROWS, n)), dtype=dtype,
                                  device=device)  # fmt: skip

    def __call__(self, x: Tensor, w: Tensor, out: Tensor) -> None:
        """out [M, N] = x [M, K] @ w [N, K]ᵀ (out may be wider than x's dtype: the lm_head's
        fp32 logits of bf16 operands). A last, partial block's tail rows keep what they held
        (zeros, or an earlier block's rows): rows never mix in a product."""
        block, result = self.block, self.result
        for start in range(0, x.shape[0], ROWS):
            n = min(ROWS, x.shape[0] - start)
            block[:n].copy_(x[start : start + n])
            out[start : start + n].copy_(block_product(block, w, result)[:n])


def bmm(x: Tensor, w: Tensor) -> Tensor:
    """x [G, ..., K] @ w[G, N, K]ᵀ -> [G, ..., N]: one invariant `matmul` per group g (the
    einsums whose second operand differs per batch row or head group)."""
    return torch.stack([matmul(x[g], w[g]) for g in range(x.shape[0])])


# Elementwise: torch's CPU kernels run a tensor's elements through a SIMD formula and the
# tail past the last full vector through a scalar one. For exp, log1p, sqrt and the IEEE
# arithmetic the two give the same bits, for sigmoid, silu and softplus they do not (a row
# alone is all tail; measured: a third of [1, 8] rows differ from the same rows in [64, 8]).
# So those three are written in the first kind's terms.


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + e^-x), the same bits wherever x sits in its tensor."""
    return 1 / (1 + torch.exp(-x))


def silu(x: Tensor) -> Tensor:
    """x sigmoid(x) = x / (1 + e^-x), batch-invariant as `sigmoid`."""
    return x / (1 + torch.exp(-x))


def softplus(x: Tensor) -> Tensor:
    """log(1 + e^x), x itself above 20 (torch's threshold), batch-invariant as `sigmoid`."""
    return torch.where(x > 20, x, torch.log1p(torch.exp(x)))
