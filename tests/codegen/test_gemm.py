"""The dense GEMM family (Triton, interpreter) against the ops' reference semantics: bf16,
W8A16 and W8A8 (official) weights, plain and grouped (wo_a), at decode and prefill row
counts and at awkward sizes (K not a multiple of BK, N below a tile); the official
activation rounding bit for bit; split-K and batch invariance.

Tolerance of a bf16 result: the kernel and the reference form the same exact products and
sum them in fp32 in different orders (each sum off by at most K * 2^-24 * sum|x w|), then
round to bf16 (2^-8 relative each): |got - want| <= 2^-7 |want| + K * 2^-23 * (|x| @ |w|ᵀ).
An fp32 result has no final rounding: the second term alone (with 2^-22 for two orders).
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.codegen.kernels.quant import act_quant_rows
from v4c.codegen.params import describe
from v4c.ir.ops.gemm import GroupedLinear, Linear
from v4c.ir.semantics.quant import (
    E4M3_MAX,
    FP8_AMAX_FLOOR,
    QuantWeight,
    act_quant_fp8,
    pow2_exponent,
)
from v4c.ir.weights import WeightFormat

FP8 = WeightFormat.fp8((128, 128))


def weight(n: int, k: int, fmt: str, seed: int = 0):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) / k**0.5
    return QuantWeight.quantize(w, FP8) if fmt == "fp8" else w.bfloat16()


def dense(w) -> torch.Tensor:
    return w.dequantize(torch.float32) if isinstance(w, QuantWeight) else w.float()


def bound(x: torch.Tensor, w, op, fp32: bool) -> torch.Tensor:
    """The stated tolerance of each output (see the module docstring)."""
    xs = x.float().flatten(0, -2) if op.kind == "linear" else x.float().flatten(0, 1)
    w = dense(w)
    if op.kind == "grouped_linear":  # [rows, H, d] -> per group
        g = op.groups
        mags = [
            xg.abs().flatten(1) @ wg.abs().T
            for xg, wg in zip(xs.unflatten(1, (g, -1)).unbind(1), w.chunk(g))
        ]
        mag, k = torch.cat(mags, dim=-1), w.shape[1]
    else:
        mag, k = xs.abs() @ w.abs().T, w.shape[1]
    return mag.reshape(*x.shape[: -1 if op.kind == "linear" else -2], -1) * k * 2.0**-22, k


def check(op, x, w, kernel_cache, params=None):
    got = run_kernel(op, [x, w], kernel_cache, params)[0]
    want = op.run([x, dense(w)])[0]
    fp32 = op.kind == "linear" and op.out_dtype == "fp32"
    slack, _ = bound(x, w, op, fp32)
    tol = slack if fp32 else 2.0**-7 * want.float().abs() + slack
    assert got.dtype == want.dtype and got.shape == want.shape
    assert ((got.float() - want.float()).abs() <= tol).all()
    return got


CASES = {  # rows (B, T), N, K: decode, prefill, K not a multiple of BK, N below a tile
    "decode": ((1, 1), 96, 256),
    "decode_batch": ((5, 1), 160, 384),
    "prefill": ((2, 37), 192, 256),
    "awkward": ((3, 1), 40, 200),
    "awkward_prefill": ((1, 70), 40, 136),
}


VARIANTS = [("bf16", False), ("fp8", False), ("fp8", True)]  # dense, W8A16, W8A8


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmt,act_quant", VARIANTS)
def test_linear(case, fmt, act_quant, kernel_cache):
    (b, t), n, k = CASES[case]
    x = torch.randn(b, t, k, generator=torch.Generator().manual_seed(1)).bfloat16()
    check(Linear(act_quant=act_quant), x, weight(n, k, fmt), kernel_cache)


@pytest.mark.parametrize("tiles", [(64, 128, 4), (128, 128, 8)])
@pytest.mark.parametrize("fmt", ["bf16", "fp8"])
def test_large_prefill_tiles(tiles, fmt, kernel_cache):
    """The tiles of a long prefill (the rule picks them at 1k+ tokens of a wide weight; the
    small cases above get the SM-filling 16 x 64), N below a tile and K not a multiple of BK."""
    x = torch.randn(1, 70, 200, generator=torch.Generator().manual_seed(10)).bfloat16()
    w, op = weight(160, 200, fmt), Linear()
    params = jit.params_for(op.kind, op.attrs(), [describe(x), describe(w)])
    block_m, block_n, warps = tiles
    params = params.model_copy(update={"block_m": block_m, "block_n": block_n,
                                       "num_warps": warps})  # fmt: skip
    check(op, x, w, kernel_cache, params)


def test_lm_head_fp32_out(kernel_cache):
    x = torch.randn(2, 1, 200, generator=torch.Generator().manual_seed(2)).bfloat16()
    got = check(Linear("fp32"), x, weight(72, 200, "bf16"), kernel_cache)
    assert got.dtype == torch.float32


@pytest.mark.parametrize("rows", [(1, 1), (2, 20)])
@pytest.mark.parametrize("fmt", ["bf16", "fp8"])
def test_grouped_wo_a(rows, fmt, kernel_cache):
    """wo_a: 2 groups of 2 heads x 64 -> 2 x 80 outputs (a group of 80 rows ends inside a
    128-row scale block and inside a 64-row tile)."""
    o = torch.randn(*rows, 4, 64, generator=torch.Generator().manual_seed(3)).bfloat16()
    check(GroupedLinear(groups=2), o, weight(160, 128, fmt), kernel_cache)


def test_fp32_activations(kernel_cache):
    """A run in fp32 holds the bf16 weights in fp32: fp32 dots (PRECISION ieee)."""
    x = torch.randn(1, 3, 136, generator=torch.Generator().manual_seed(4))
    w = torch.randn(40, 136, generator=torch.Generator().manual_seed(5))
    got = run_kernel(Linear(), [x, w], kernel_cache)[0]
    torch.testing.assert_close(got, x @ w.T, rtol=2.0**-20, atol=136 * 2.0**-22 * 4)


# -- the official activation rounding -------------------------------------------------------


@triton.jit
def _quantise(x_ptr, q_ptr, s_ptr, n, BLOCK: tl.constexpr):
    r = tl.program_id(0)
    i = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + r * n + i[None, :], mask=i[None, :] < n, other=0.0)
    q, s = act_quant_rows(x, True)
    tl.store(q_ptr + r * BLOCK + i[None, :], q)
    tl.store(s_ptr + r + tl.arange(0, 1), s)


def test_activation_rounding_is_the_references_bit_for_bit():
    """Scales and e4m3 values of `act_quant_rows` equal the reference's: random blocks,
    amax exactly 448 * 2^k (no rounding up) and one ulp above it, a zero block (the 1e-4
    floor), ties between e4m3 neighbours (17 -> 16, 19 -> 20, 0.5 + 2^-10 -> 2^-9 grid),
    subnormal e4m3 values, and a block shorter than 128 (zero padding)."""
    gen = torch.Generator().manual_seed(6)
    rows = [torch.randn(100, generator=gen) * 10.0**e for e in (-6, -2, 0, 3)]
    rows.append(torch.full((100,), 448.0 * 2.0**-3).nextafter(torch.tensor(1.0)))
    top = torch.zeros(100)
    top[0] = 448.0
    top[1:20] = torch.tensor([17.0, 19.0, 0.5 + 2**-10, 2**-8, 3 * 2**-10, 1e-6] + [7.5] * 13)
    rows += [top, torch.zeros(100), -top * 2.0**-5]
    x = torch.stack(rows).bfloat16().float()  # as a bf16 activation arrives
    q = torch.empty(len(rows), 128)
    s = torch.empty(len(rows))
    _quantise[(len(rows),)](x, q, s, 100, BLOCK=128)
    k = pow2_exponent(x.abs().amax(-1, keepdim=True), E4M3_MAX, FP8_AMAX_FLOOR)
    s_ref = torch.exp2(k.float())
    q_ref = (x / s_ref).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float()
    assert torch.equal(s, s_ref[:, 0])
    assert torch.equal(q[:, :100], q_ref) and not q[:, 100:].any()
    assert torch.equal(q[:, :100] * s[:, None], act_quant_fp8(x))
    assert q[5, 1] == 16.0 and q[5, 2] == 20.0  # ties to even (s = 1 for amax 448)


# -- invariance -----------------------------------------------------------------------------


def test_split_count_changes_only_the_rounding(kernel_cache):
    """The same GEMM summed in 1, 2, 3 (runs of 3, 3, 2 K blocks) and 8 runs: equal within
    the stated tolerance (fp32 out, so that the order shows); and the runs on separate
    programs (the last to arrive adding them in one launch) or one after another give the
    same bits."""
    x = torch.randn(4, 1, 1024, generator=torch.Generator().manual_seed(7)).bfloat16()
    w = weight(64, 1024, "fp8")
    op = Linear("fp32", act_quant=True)
    base = jit.params_for(op.kind, op.attrs(), [describe(x), describe(w)])
    assert base.split == 8 and base.split_ctas  # 1 tile: as many runs as K blocks
    outs = {}
    for split in (1, 2, 3, 8):
        for ctas in (False, True):
            params = base.model_copy(update={"split": split, "split_ctas": ctas})
            outs[split, ctas] = check(op, x, w, kernel_cache, params)
        assert torch.equal(outs[split, False], outs[split, True])
    assert not torch.equal(outs[1, True], outs[2, True])  # the order did change


def test_split_programs_reuse_the_scratch_and_leave_the_counters_at_zero(kernel_cache):
    """A split-K launch handed scratch and counters (as a bound program hands them): the
    partials of a previous call (here NaN bytes) are never read, each output tile's counter
    is back at 0 after the launch, so a second launch gives the same bits."""
    x = torch.randn(1, 1, 512, generator=torch.Generator().manual_seed(9)).bfloat16()
    w = weight(160, 512, "bf16")
    op = Linear()
    shapes = [describe(x), describe(w)]
    params = jit.params_for(op.kind, op.attrs(), shapes)
    assert params.split_ctas and params.split == 8  # 3 n tiles x 8 runs of one K block
    kernel = jit.load(params, kernel_cache)
    scratch = torch.full((kernel.scratch_bytes(shapes),), 255, dtype=torch.uint8)
    counters = torch.zeros(kernel.counter_words(shapes), dtype=torch.int32)
    first = kernel.run(x, w, scratch=scratch, counters=counters)[0]
    assert counters.shape == (3,) and not counters.any()
    again = kernel.run(x, w, out=(torch.full_like(first, float("nan")),), scratch=scratch,
                       counters=counters)[0]  # fmt: skip
    assert torch.equal(first, again) and not counters.any()
    assert torch.equal(first, check(op, x, w, kernel_cache, params))


@pytest.mark.parametrize("fmt,act_quant", VARIANTS)
def test_a_rows_result_does_not_depend_on_the_rows_beside_it(fmt, act_quant, kernel_cache):
    """Each row alone (the decode bucket: 16 x 64 tiles, the runs on separate programs) and
    all 40 rows in one call with a large prefill bucket's tiles (64 x 128, the runs in one
    program) give the same bits: the K order is fixed by the weight, and every dot sums in
    16-column steps (`dot_k16`), on a GPU by the MMA and in the interpreter by hand."""
    x = torch.randn(40, 1, 256, generator=torch.Generator().manual_seed(8)).bfloat16()
    w = weight(96, 256, fmt)
    op = Linear(act_quant=act_quant)
    decode = jit.params_for(op.kind, op.attrs(), [describe(x[:1]), describe(w)])
    assert decode.split_ctas and decode.split > 1 and (decode.block_m, decode.block_n) == (16, 64)
    prefill = decode.model_copy(update={"block_m": 64, "block_n": 128, "split_ctas": False})
    together = check(op, x, w, kernel_cache, prefill)
    alone = [run_kernel(op, [x[i : i + 1], w], kernel_cache, decode)[0] for i in range(40)]
    assert torch.equal(together, torch.cat(alone))
