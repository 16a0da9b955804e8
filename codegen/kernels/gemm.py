"""The dense GEMM family: out[M, N] = x[M, K] W[N, K]ᵀ for a weight held as bf16/fp32, or
FP8 e4m3 with one E8M0 scale per [SB_O, SB_I] block, read as stored.

Every tile is computed swap-AB: the weight rows are the MMA's M side and the tokens its N
side (acc [BN, BM]), so at decode a 64-row weight tile fills a warpgroup MMA while a
handful of tokens ride along, and the instruction that reduces a row never depends on how
many rows share the call. The reduction over K is fixed by K and N alone: SPLIT runs of
whole K blocks, each summed into its own fp32 accumulator, the runs then added in order
0..SPLIT-1 — on separate programs (decode: through the plan's fp32 scratch, the last run of
a tile to arrive adding them, `kernels/split.py`) or one after the other in one program
(prefill): the same sums in the same order, so a row's result does not depend on the number of
rows, nor on the entry it runs in.

Weight modes (MODE):
- "dense": bf16/fp32 weight tiles given to the dot as `dot_operand` takes them;
- "w8a16": FP8 tiles times their block scales in registers (exact in bf16), bf16 dots;
- "w8a8" (numerics official): each 128-block of x rounded to e4m3 with a power-of-two
  scale (`kernels/quant.py`), FP8 x FP8 dots, each K block's fp32 product times the x
  and weight scales added to the accumulator, as the official fp8_gemm does (BK = SB_I).

Legend: BM tokens, BN weight rows (outputs), BK reduction step; G groups (wo_a: each group
of N_G outputs reads its own K_G inputs of x; a plain linear is G = 1).
"""

import triton
import triton.language as tl

from v4c.codegen.kernels.dots import dot_k16, dot_operand
from v4c.codegen.kernels.moe_gemm import e8m0_value
from v4c.codegen.kernels.quant import act_quant_rows
from v4c.codegen.kernels.split import split_total


@triton.jit
def tile_order(pid, num_m, num_n, GROUP: tl.constexpr):
    """(m tile, n tile) of program `pid`, GROUP m tiles swept together across every n tile
    (prefill: the weight tiles they share stay in L2)."""
    per_group = GROUP * num_n
    first_m = (pid // per_group) * GROUP
    size = tl.minimum(num_m - first_m, GROUP)
    return first_m + (pid % per_group) % size, (pid % per_group) // size


@triton.jit
def fp8_byte(words, J: tl.constexpr):
    """Byte J of each int32 word (an e4m3 code) -> its value in fp32."""
    return ((words >> (8 * J)) & 255).to(tl.int8).to(tl.float8e4nv, bitcast=True).to(tl.float32)


@triton.jit
def fp8_words(w_ptr, n, n_end, kb, K_G, BK: tl.constexpr):
    """The e4m3 tile W[n, kb*BK : (kb+1)*BK] -> [BN, BK] fp32, read as int32 words of 4 codes
    (a row of K_G % 4 == 0 codes is whole words): the W8A16 tile goes through registers to be
    scaled, and Triton gives a byte tile with that use 8-byte copies, a word tile 16-byte
    ones. Word i holds inputs 4i..4i+3, input 4i + j in byte j (little-endian); the bytes are
    put back in input order by two joins, ((b0, b2), (b1, b3)) -> [BN, BK/4, 2, 2]."""
    kw = kb * (BK // 4) + tl.arange(0, BK // 4)
    live = (n[:, None] < n_end) & (kw[None, :] < K_G // 4)
    at = w_ptr.to(tl.pointer_type(tl.int32)) + n[:, None].to(tl.int64) * (K_G // 4) + kw[None, :]
    words = tl.load(at, mask=live, other=0)
    low = tl.join(fp8_byte(words, 0), fp8_byte(words, 2))
    high = tl.join(fp8_byte(words, 1), fp8_byte(words, 3))
    return tl.reshape(tl.join(low, high), (n.shape[0], BK))


@triton.jit
def weight_block(
    w_ptr,
    s_ptr,
    n,
    n_end,
    kb,
    k,
    K_G,
    MODE: tl.constexpr,
    SB_O: tl.constexpr,
    SB_I: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The weight tile W[n, k] (n: global rows [BN] below n_end, k: the [BK] inputs of K
    block kb; an FP8 weight has BK = SB_I) as the dot takes it, and (w8a8) the E8M0 scale
    of each row's block [BN] (1 otherwise)."""
    if MODE == "w8a16" and K_G % 4 == 0:  # whole int32 words a row: 16-byte loads
        w = fp8_words(w_ptr, n, n_end, kb, K_G, SB_I)
    else:
        live = (n[:, None] < n_end) & (k[None, :] < K_G)
        w = tl.load(w_ptr + n[:, None].to(tl.int64) * K_G + k[None, :], mask=live, other=0.0)
    scale = tl.full(n.shape, 1.0, tl.float32)
    if MODE != "dense":
        blocks_in = (K_G + SB_I - 1) // SB_I
        b = tl.load(s_ptr + (n // SB_O) * blocks_in + kb, mask=n < n_end, other=127)
        scale = e8m0_value(b)
    if MODE == "w8a8":
        if UPCAST:
            w = w.to(tl.float32)
    elif MODE == "w8a16":
        w = dot_operand(w.to(tl.float32) * scale[:, None], UPCAST, PRECISION)
        scale = tl.full(n.shape, 1.0, tl.float32)
    else:
        w = dot_operand(w, UPCAST, PRECISION)
    return w, scale


@triton.jit
def k_block(acc, x_rows, w_ptr, s_ptr, m, n, g, M, kb, N_G, K_G, MODE: tl.constexpr,
            SB_O: tl.constexpr, SB_I: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr,
            PRECISION: tl.constexpr):  # fmt: skip
    """acc [BN, BM] + the product of K block kb (x_rows: the tokens' rows of x at group g),
    each dot in `dot_k16`'s order (the interpreter's too is then fixed by K, not BM or BN)."""
    k = kb * BK + tl.arange(0, BK)
    x = tl.load(x_rows + k[None, :], mask=(m[:, None] < M) & (k[None, :] < K_G), other=0.0)
    w, w_scale = weight_block(
        w_ptr, s_ptr, n, (g + 1) * N_G, kb, k, K_G, MODE, SB_O, SB_I, UPCAST, PRECISION
    )
    if MODE == "w8a8":
        xq, x_scale = act_quant_rows(x, UPCAST)
        part = dot_k16(w, tl.trans(xq), tl.zeros(acc.shape, tl.float32), UPCAST, "tf32")
        acc += part * w_scale[:, None] * x_scale[None, :]
    else:
        acc = dot_k16(w, tl.trans(dot_operand(x, UPCAST, PRECISION)), acc, UPCAST, PRECISION)
    return acc


@triton.jit
def gemm_run(x_ptr, w_ptr, s_ptr, m, n, g, M, s, X_STRIDE, N_G, K_G, MODE: tl.constexpr,
             SB_O: tl.constexpr, SB_I: tl.constexpr, SPLIT: tl.constexpr, BM: tl.constexpr,
             BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr,
             PRECISION: tl.constexpr):  # fmt: skip
    """acc [BN, BM] fp32 of run `s` of the SPLIT runs of K blocks, for tokens m [BM] and
    global weight rows n [BN] of group g (rows g*N_G .. (g+1)*N_G - 1)."""
    blocks = (K_G + BK - 1) // BK
    per_run = (blocks + SPLIT - 1) // SPLIT
    acc = tl.zeros((BN, BM), tl.float32)
    x_rows = x_ptr + m.to(tl.int64)[:, None] * X_STRIDE + g * K_G
    for kb in range(s * per_run, tl.minimum(blocks, (s + 1) * per_run)):
        acc = k_block(acc, x_rows, w_ptr, s_ptr, m, n, g, M, kb, N_G, K_G, MODE, SB_O, SB_I, BK,
                      UPCAST, PRECISION)  # fmt: skip
    return acc


@triton.jit
def gemm_runs(x_ptr, w_ptr, s_ptr, m, n, g, M, X_STRIDE, N_G, K_G, MODE: tl.constexpr,
              SB_O: tl.constexpr, SB_I: tl.constexpr, SPLIT: tl.constexpr, BM: tl.constexpr,
              BN: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr,
              PRECISION: tl.constexpr):  # fmt: skip
    """The SPLIT runs one after another in ONE loop over the K blocks (one software pipeline
    across the runs, where a loop per run of one or two blocks would wait out each load):
    each run summed from zero, then the total is the first run's sum, plus each next one's
    as it ends: ((p_0 + p_1) + p_2) + ..., the sums of `split_total`. (A run past the last
    block, empty, adds nothing here and a zero there: the same bits but for a zero's sign.)"""
    blocks = (K_G + BK - 1) // BK
    per_run = (blocks + SPLIT - 1) // SPLIT
    acc = tl.zeros((BN, BM), tl.float32)
    total = tl.zeros((BN, BM), tl.float32)
    x_rows = x_ptr + m.to(tl.int64)[:, None] * X_STRIDE + g * K_G
    for kb in range(0, blocks):
        acc = k_block(acc, x_rows, w_ptr, s_ptr, m, n, g, M, kb, N_G, K_G, MODE, SB_O, SB_I, BK,
                      UPCAST, PRECISION)  # fmt: skip
        if SPLIT > 1:
            end = ((kb + 1) % per_run == 0) | (kb + 1 == blocks)
            total = tl.where(end, tl.where(kb < per_run, acc, total + acc), total)
            acc = tl.where(end, 0.0, acc)
    if SPLIT > 1:
        acc = total
    return acc


@triton.jit
def gemm_tile(x_ptr, w_ptr, s_ptr, out_ptr, part_ptr, count, M, tile, g, s, GROUPS: tl.constexpr,
              N_G: tl.constexpr, K_G: tl.constexpr, MODE: tl.constexpr, SB_O: tl.constexpr,
              SB_I: tl.constexpr, SPLIT: tl.constexpr, SPLIT_CTAS: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              GROUP_M: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """One program's work: output tile `tile` (of the cdiv(M, BM) x cdiv(N_G, BN) tiles of
    group g, in `tile_order`) into out [M, GROUPS * N_G]; with SPLIT_CTAS only run s of it,
    its partial through part_ptr (the fp32 [SPLIT, M, GROUPS * N_G] scratch) and `count` (the
    tile's arrival counter), the last run to arrive storing the tile; else all the runs."""
    pid_m, pid_n = tile_order(tile, tl.cdiv(M, BLOCK_M), tl.cdiv(N_G, BLOCK_N), GROUP_M)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = g * N_G + pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    live = (m[None, :] < M) & (n[:, None] < (g + 1) * N_G)
    dst = m[None, :].to(tl.int64) * (GROUPS * N_G) + n[:, None]
    if SPLIT_CTAS:  # the tile's last run to arrive sums them all
        acc = gemm_run(x_ptr, w_ptr, s_ptr, m, n, g, M, s, GROUPS * K_G, N_G, K_G, MODE, SB_O,
                       SB_I, SPLIT, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)  # fmt: skip
        total, last = split_total(acc, s, part_ptr, dst, live, count, SPLIT, M * GROUPS * N_G)
    else:  # the runs one after another: the same sums in the same order
        total = gemm_runs(x_ptr, w_ptr, s_ptr, m, n, g, M, GROUPS * K_G, N_G, K_G, MODE, SB_O,
                          SB_I, SPLIT, BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)  # fmt: skip
        last = True
    if last:
        tl.store(out_ptr + dst, total.to(out_ptr.dtype.element_ty), mask=live)
