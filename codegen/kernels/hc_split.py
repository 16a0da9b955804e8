"""The split-K projection of hyper-connections (V4_REFERENCE §3) on register tiles.

The projection `fn . flatten(X)` reads a [R, n*D] fp32 matrix (1.5 MB for Flash) per launch.
It is split over many programs: program (token block, split s) projects D-blocks s, s+S, ...
of BLOCK_T tokens with `tl.dot` in fp32 (IEEE, as the official fp32 `F.linear`) and writes
its partial logits and sum of squares to a scratch [tokens, S, RP] (column R: the squares).
`reduce_splits` then sums one token's partials in a fixed order. A token's tile is always
[BLOCK_T, ...] and S is a constant of the kernel, so a row's result never depends on how many
tokens share the call (the dot computes each output from its own row alone, K in order).

Tiles: streams [BLOCK_T, NP, BLOCK_D] fp32 (NP = n padded to a power of two; padded streams,
columns >= D and tokens off `on` are 0); logits [BLOCK_T, RP] (RP = R + 1 padded to a power of
two, >= 16 for the dot: column R holds the sum of squares in the scratch).
"""

import triton
import triton.language as tl


@triton.jit
def load_block(x_ptr, toks, on, d0, N: tl.constexpr, D: tl.constexpr, NP: tl.constexpr,
               BLOCK_D: tl.constexpr):  # fmt: skip
    """X[toks, :, d0:d0+BLOCK_D] of X [tokens, N, D] as a [BLOCK_T, NP, BLOCK_D] fp32 tile."""
    t = toks[:, None, None]
    j = tl.arange(0, NP)[None, :, None]
    d = d0 + tl.arange(0, BLOCK_D)[None, None, :]
    mask = on[:, None, None] & (j < N) & (d < D)
    return tl.load(x_ptr + t * (N * D) + j * D + d, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def store_block(x_ptr, tile, toks, on, d0, N: tl.constexpr, D: tl.constexpr,
                NP: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """Write a [BLOCK_T, NP, BLOCK_D] tile into X [tokens, N, D] in X's dtype."""
    t = toks[:, None, None]
    j = tl.arange(0, NP)[None, :, None]
    d = d0 + tl.arange(0, BLOCK_D)[None, None, :]
    mask = on[:, None, None] & (j < N) & (d < D)
    tl.store(x_ptr + t * (N * D) + j * D + d, tile.to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def load_a(a_ptr, toks, on, d0, N: tl.constexpr, D: tl.constexpr, NP: tl.constexpr,
           BLOCK_D: tl.constexpr):  # fmt: skip
    """The sublayer output a[toks, d0:d0+BLOCK_D] of a [tokens, D], repeated over the stream
    axis -> [BLOCK_T, NP, BLOCK_D] fp32: a whole tile, so its loads are 16-byte vectors."""
    t = toks[:, None, None]
    j = tl.arange(0, NP)[None, :, None]
    d = d0 + tl.arange(0, BLOCK_D)[None, None, :]
    mask = on[:, None, None] & (j < N) & (d < D)
    return tl.load(a_ptr + t * D + 0 * j + d, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def combine_a(y_ptr, rows_ptr, shared_ptr, toks, on, d0, N: tl.constexpr, D: tl.constexpr,
              K: tl.constexpr, NP: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """`load_a` of the MoE combine's result, computed here as moe_combine does: a token's K
    expert rows y[rows[t*K + k]] summed in fp32 in pick order, + the shared expert's row,
    rounded once to the shared expert's dtype -> [BLOCK_T, NP, BLOCK_D] fp32."""
    j = tl.arange(0, NP)[None, :, None]
    d = d0 + tl.arange(0, BLOCK_D)[None, None, :]
    mask = on[:, None, None] & (j < N) & (d < D)
    acc = tl.zeros([toks.shape[0], NP, BLOCK_D], tl.float32)
    for k in tl.static_range(K):
        row = tl.load(rows_ptr + toks * K + k, mask=on, other=0)[:, None, None]  # [BLOCK_T]
        acc += tl.load(y_ptr + row * D + 0 * j + d, mask=mask, other=0.0).to(tl.float32)
    acc += load_a(shared_ptr, toks, on, d0, N, D, NP, BLOCK_D)
    return acc.to(shared_ptr.dtype.element_ty).to(tl.float32)


@triton.jit
def mix_block(a, x_ptr, post_ptr, comb_ptr, toks, on, d0, N: tl.constexpr, D: tl.constexpr,
              NP: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """hc_post on a block of tokens in fp32, the reference's terms (the mix over j, then +
    the expansion): X'[t, k] = post[t, k] a[t] + sum_j comb[t, j, k] X[t, j] -> [BLOCK_T, NP,
    BLOCK_D], from a as `load_a` gives it. The streams are read as a whole [BLOCK_T, NP,
    BLOCK_D] tile (16-byte loads)."""
    t = toks[:, None, None]
    j = tl.arange(0, NP)[None, :, None]
    x = load_block(x_ptr, toks, on, d0, N, D, NP, BLOCK_D)  # [BLOCK_T, NP(j), BLOCK_D]
    k = tl.arange(0, NP)[None, None, :]
    on_jk = on[:, None, None] & (j < N) & (k < N)
    c = tl.load(comb_ptr + t * (N * N) + j * N + k, mask=on_jk, other=0.0).to(tl.float32)
    mix = tl.sum(c[:, :, :, None] * x[:, :, None, :], axis=1)  # [BLOCK_T, NP(k), BLOCK_D]
    kk = tl.arange(0, NP)[None, :]
    post = tl.load(post_ptr + toks[:, None] * N + kk, mask=on[:, None] & (kk < N), other=0.0)
    return post.to(tl.float32)[:, :, None] * a + mix


@triton.jit
def project_block(acc, x, fn_ptr, d0, R: tl.constexpr, N: tl.constexpr, D: tl.constexpr,
                  RP: tl.constexpr, NP: tl.constexpr, BLOCK_T: tl.constexpr,
                  BLOCK_D: tl.constexpr):  # fmt: skip
    """acc [BLOCK_T, RP] + flatten(x) . fn[:, the block's columns]^T, fp32 IEEE on the dot.
    fn [R, N*D] is read along its rows (coalesced) as [RP, NP*BLOCK_D] and transposed."""
    r = tl.arange(0, RP)[:, None, None]
    j = tl.arange(0, NP)[None, :, None]
    d = d0 + tl.arange(0, BLOCK_D)[None, None, :]
    w = tl.load(fn_ptr + r * (N * D) + j * D + d, mask=(r < R) & (j < N) & (d < D), other=0.0)
    w = tl.reshape(w.to(tl.float32), (RP, NP * BLOCK_D))
    xs = tl.reshape(x, (BLOCK_T, NP * BLOCK_D))
    return tl.dot(xs, tl.trans(w), acc, input_precision="ieee")


@triton.jit
def store_partial(part_ptr, acc, sq, toks, on, s, SPLITS: tl.constexpr, R: tl.constexpr,
                  RP: tl.constexpr):  # fmt: skip
    """Split s's partial logits acc [BLOCK_T, RP] (columns >= R are 0) with the sums of
    squares sq [BLOCK_T] in column R (RP > R), into the scratch [tokens, SPLITS, RP]: whole
    rows, so the stores and the finishing program's loads are 16-byte vectors."""
    row = (toks * SPLITS + s) * RP  # [BLOCK_T]
    r = tl.arange(0, RP)[None, :]
    tile = tl.where(r == R, sq[:, None], acc)
    tl.store(part_ptr + row[:, None] + r, tile, mask=on[:, None])


@triton.jit
def reduce_splits(part_ptr, tok, SPLITS: tl.constexpr, R: tl.constexpr, RP: tl.constexpr,
                  BLOCK_S: tl.constexpr):  # fmt: skip
    """One token's logits [RP] (column R: the sum of squares, which it also returns as a
    scalar) summed over the splits in a fixed order: [BLOCK_S, RP] tiles in split order, each
    reduced by `tl.sum`. Loads go to L2 (`.cg`): other programs of this launch wrote the
    scratch."""
    r = tl.arange(0, RP)
    acc = tl.zeros([RP], tl.float32)
    for s0 in tl.static_range(0, SPLITS, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        row = part_ptr + (tok * SPLITS + s) * RP  # [BLOCK_S]
        p = tl.load(row[:, None] + r[None, :], mask=(s < SPLITS)[:, None], other=0.0,
                    cache_modifier=".cg")  # fmt: skip
        acc += tl.sum(p, axis=0)
    return acc, tl.sum(tl.where(r == R, acc, 0.0), axis=0)
