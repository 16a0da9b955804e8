"""The expert GEMM helpers bit for bit, and the expert templates at the row counts that pick
their tiles: a decode step (16-row tiles), prefills (64- and 128-row tiles), uneven and
empty expert groups, every slot on one expert, odd token counts, and numerics official.

The FP4 decode (every code under several E8M0 scales) and the official FP8 activation
rounding are compared with `ir/semantics/quant.py` for exact equality; the templates with the
ops' reference semantics on the dequantised weights.
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.codegen.ops.moe import MoeSort as MoeSortParams
from v4c.codegen.params import describe
from v4c.envs import triton_interpret
from tests.codegen.test_moe import LIMIT, TOL, assert_clamps_hit, dequantized, experts
from v4c.codegen.kernels.moe_gemm import e2m1_tile, fp4_words
from v4c.codegen.kernels.quant import fp8_round_rows, round_to
from v4c.ir.ops.moe import GroupedSwiglu, MoeSort, Swiglu
from v4c.ir.semantics.quant import QuantWeight, act_quant_fp8, fp4_dequantize
from v4c.ir.weights import WeightFormat

D, I, E = 64, 32, 8


@triton.jit
def decode_fp4(w_ptr, s_ptr, out_ptr, IN: tl.constexpr, SB_I: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """Writes the [BN, BK] weights of the first BK inputs of BN FP4 rows (fp32 under the
    interpreter, bf16 from the packed multiply on a GPU)."""
    n = tl.arange(0, BN)
    words, factor = fp4_words(w_ptr, s_ptr, n, n < BN, 0, IN, SB_I, BK)
    dst = out_ptr + n[:, None] * BK + tl.arange(0, BK)[None, :]
    tl.store(dst, e2m1_tile(words, factor, UPCAST).to(tl.float32))


@triton.jit
def round_rows(x_ptr, y_ptr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * 16 + tl.arange(0, 16)
    at = rows[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]
    tl.store(y_ptr + at, fp8_round_rows(tl.load(x_ptr + at)))


@triton.jit
def bf16_rows(x_ptr, y_ptr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * 16 + tl.arange(0, 16)
    at = rows[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]
    tl.store(y_ptr + at, round_to(tl.load(x_ptr + at), tl.bfloat16))


@pytest.mark.parametrize("scale_byte", [0, 1, 100, 121, 127, 128])
def test_fp4_decode_is_exact(scale_byte):
    """All 16 codes at every position of a word (and every nibble of a byte) under one E8M0
    scale per 32 inputs, as the checkpoint stores them, equal the reference dequantisation."""
    bn, k = 16, 128
    codes = (torch.arange(bn * k) * 7 + torch.arange(bn * k) // 16) % 16  # [BN*K] every code
    codes = codes.view(bn, k).to(torch.uint8)  # each code at each of the 8 word phases
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).view(torch.int8)  # [BN, K/2]
    bytes_ = torch.full((bn, k // 32), scale_byte, dtype=torch.uint8)
    bytes_[:, 1] = max(scale_byte - 3, 0)  # a second scale in the row
    scale = bytes_.view(torch.float8_e8m0fnu)
    out = torch.empty(bn, k)
    decode_fp4[(1,)](packed, bytes_, out, IN=k, SB_I=32, BN=bn, BK=k, UPCAST=triton_interpret())
    want = fp4_dequantize(packed, scale, torch.float32)
    assert torch.equal(out, want) and (want.view(-1, 16) != 0).any()


def test_fp8_round_rows_is_bit_equal_to_act_quant():
    """The official activation rounding on rows of every magnitude, zero rows, rows whose
    amax is 448 times a power of two (no rounding up of the scale), and e4m3 ties, normal
    and subnormal, equals `act_quant_fp8` bit for bit."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(64, 128, generator=gen) * torch.logspace(-9, 4, 64)[:, None]
    x[0] = 0.0
    x[1, :8] = 448.0 * 2.0 ** torch.arange(-4, 4).float()  # amax exactly 448 * 2^3
    x[2] = 448.0 * (torch.arange(128) % 3 - 1)
    ties = torch.arange(1, 129).float() * 2.0**-10 + 2.0**-11  # e4m3 subnormal/normal ties
    x[3] = ties.flip(0) * (448 / ties.max())
    x[4] = (torch.arange(128).float() + 0.5) * 2.0**-9 * (2 ** (torch.arange(128) % 5))
    x[5:9] = x[5:9].to(torch.bfloat16).float()  # bf16 activations, as the kernels load them
    y = torch.empty_like(x)
    round_rows[(4,)](x, y, BLOCK=128)
    assert torch.equal(y.view(torch.int32), act_quant_fp8(x).view(torch.int32))


def routed(n: int, k: int, gen: torch.Generator, how: str) -> torch.Tensor:
    """idx [1,n,k]: 'uneven' draws from experts 1..7 with 1 three times as likely and 0
    never (an empty group); 'one' puts every slot of every token on expert 5."""
    if how == "one":
        return torch.full((1, n, k), 5, dtype=torch.int64)
    p = torch.tensor([0.0, 3, 1, 1, 1, 1, 1, 1])
    return torch.stack([torch.multinomial(p, k, generator=gen) for _ in range(n)]).unsqueeze(0)


def grouped(fmt, dtype, n, k, how, act_quant, kernel_cache, seed=12):
    """The grouped SwiGLU kernel and its reference on n tokens routed `how`."""
    gen = torch.Generator().manual_seed(seed)
    x = (2 * torch.randn(1, n, D, generator=gen)).to(dtype)
    order, offsets = MoeSort(num_experts=E).run([routed(n, k, gen, how)])
    weights = torch.rand(1, n, k, generator=gen) + 0.5
    ins = [x, order, offsets, weights, *experts(fmt, gen)]
    op = GroupedSwiglu(limit=LIMIT, act_quant=act_quant)
    (got,) = run_kernel(op, ins, kernel_cache)
    (want,) = op.run(dequantized(ins))
    return got, want, dequantized(ins)


# Official numerics with fp32 activations: the FP8 roundings of x and h are the reference's
# bit for bit (above), so only a sum-order difference that moves h across an e4m3 rounding
# boundary could differ, at ~1e-7 / 2^-4 per element: none expected, fp32 tolerance holds.
@pytest.mark.parametrize(
    "fmt, dtype, n, k, how, act_quant",
    [
        ("fp4", torch.bfloat16, 1, 6, "uneven", False),  # decode, batch 1: 16-row tiles
        ("fp4", torch.float32, 3, 6, "uneven", True),  # decode, batch 3, official
        ("fp4", torch.float32, 67, 2, "uneven", False),  # prefill: 64-row tiles, odd count
        ("fp4", torch.float32, 87, 6, "one", True),  # 522 slots on one expert: 128-row tiles
        ("fp8/16", torch.float32, 41, 4, "uneven", True),  # FP8 blocks, 64-row tiles
        ("bf16", torch.bfloat16, 5, 3, "one", False),
    ],
)
def test_grouped_swiglu_tiles(fmt, dtype, n, k, how, act_quant, kernel_cache):
    got, want, ref = grouped(fmt, dtype, n, k, how, act_quant, kernel_cache)
    assert got.shape == want.shape == (1, n, k, D) and got.dtype == want.dtype
    assert_clamps_hit(ref[0], ref[4], ref[6])
    torch.testing.assert_close(got, want, **TOL[dtype])


def test_official_numerics_round_in_bf16(kernel_cache):
    """Numerics official under bf16 activations: w1 x, w3 x and h rounded to bf16 as the
    official GEMMs write them (`round_to`, bit-equal to the reference's, below), so the
    outputs agree to the output's rounding; a sum-order difference could move a GEMM output
    across a bf16 or e4m3 rounding boundary (~1e-4 of them), none does at this seed. The
    plain numerics are farther off than that."""
    got, want, _ = grouped("fp4", torch.bfloat16, 9, 6, "uneven", True, kernel_cache, seed=13)
    plain, _, _ = grouped("fp4", torch.bfloat16, 9, 6, "uneven", False, kernel_cache, seed=13)
    torch.testing.assert_close(got, want, **TOL[torch.bfloat16])
    assert not torch.isclose(plain.float(), want.float(), **TOL[torch.bfloat16]).all()


def test_round_to_bf16_is_torch_cast():
    """The official bf16 rounding point, ties included, equals torch's cast (the
    interpreter's own cast truncates)."""
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(16))
    x[0] = (torch.arange(128) * 2 + 1).float() * 2.0**-8 + 1  # halfway between bf16 values
    y = torch.empty_like(x)
    bf16_rows[(4,)](x, y, BLOCK=128)
    assert torch.equal(y, x.to(torch.bfloat16).float())


@pytest.mark.parametrize(
    "n, act_quant", [(1, False), (1, True), (21, False), (19, True)]
)  # decode (16x16 tiles) and prefill (64-row tiles)
def test_shared_expert_tiles(n, act_quant, kernel_cache):
    gen = torch.Generator().manual_seed(14)
    x = 2 * torch.randn(1, n, D, generator=gen)
    ws = experts("fp8/16", gen, lead=())
    op = Swiglu(limit=LIMIT, act_quant=act_quant)
    (got,) = run_kernel(op, [x, *ws], kernel_cache)
    (want,) = op.run(dequantized([x, *ws]))
    torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_a_slot_does_not_depend_on_its_batch(kernel_cache):
    """Batch invariance: token 0's slots computed in a decode step (16-row tiles) and inside
    a prefill of 70 tokens (64-row tiles) are the same bits."""
    gen = torch.Generator().manual_seed(15)
    x = 2 * torch.randn(1, 70, D, generator=gen)
    idx = routed(70, 2, gen, "uneven")
    weights = torch.rand(1, 70, 2, generator=gen) + 0.5
    ws = experts("fp4", gen)
    op = GroupedSwiglu(limit=LIMIT)

    def slot_rows(t):
        order, offsets = MoeSort(num_experts=E).run([idx[:, :t]])
        (y,) = run_kernel(op, [x[:, :t], order, offsets, weights[:, :t], *ws], kernel_cache)
        rows = torch.argsort(order.flatten())[:2]  # the sorted rows of token 0's two slots
        return y.view(-1, D)[rows]

    assert torch.equal(slot_rows(1), slot_rows(70))


def test_shared_expert_split_ranges(kernel_cache):
    """D = I = 256 in FP8 128x128 blocks: each reduction is cut in 2 ranges of 128. At decode
    (1 and 16 tokens: 16-row tiles) each range is a program of its own and the last to finish
    sums them; at prefill (17 and 20 tokens: 64-row tiles) one program runs both in turn. All
    equal the reference, and token 0 is the same bits in the two batches of each tile size.
    (Between tile sizes the interpreter's dots are numpy matmuls of 16 and 64 rows, which
    need not round alike; the GPU's are one MMA shape per k16 step.)"""
    gen = torch.Generator().manual_seed(17)
    x = 2 * torch.randn(1, 20, 256, generator=gen)
    fp8 = WeightFormat.fp8((128, 128))
    ws = [QuantWeight.quantize(0.1 * torch.randn(256, 256, generator=gen), fp8) for _ in range(3)]
    op = Swiglu(limit=LIMIT)
    params = jit.params_for(op.kind, op.attrs(), [describe(t) for t in (x, *ws)])
    assert (params.split_d, params.split_i) == (2, 2)
    (want,) = op.run(dequantized([x, *ws]))
    token0 = []
    for n in (1, 16, 17, 20):
        (got,) = run_kernel(op, [x[:, :n], *ws], kernel_cache)
        torch.testing.assert_close(got, want[:, :n], **TOL[torch.float32])
        token0.append(got[0, 0])
    assert torch.equal(token0[0], token0[1]) and torch.equal(token0[2], token0[3])


@pytest.mark.parametrize("how", ["uneven", "one"])
def test_sort_in_one_launch(how, kernel_cache):
    """The counting sort's one program over 26 chunks of 16 slots (67 tokens x 6 picks):
    offsets and the stable order equal the reference's, expert 0 empty or all on one."""
    idx = routed(67, 6, torch.Generator().manual_seed(18), how)
    op = MoeSort(num_experts=E)
    got = run_kernel(op, [idx], kernel_cache, MoeSortParams(experts=E, block=16))
    want = op.run([idx])
    assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("n", [1, 40])  # a decode step and a prefill (64-row tiles)
def test_expert_parallel_rank_fp4(n, kernel_cache):
    """A rank holding 4 of the 8 experts: slots of the other ranks' experts sit in the last
    group (local id 4) and come out 0; the rank's own slots equal the reference, official
    numerics on."""
    gen = torch.Generator().manual_seed(19)
    local = E // 2
    x = 2 * torch.randn(1, n, D, generator=gen)
    idx = torch.randint(0, local + 1, (1, n, 3), generator=gen)  # local ids, `local`: others
    idx[0, 0, 2] = local
    order, offsets = MoeSort(num_experts=local + 1).run([idx])
    weights = (torch.rand(1, n, 3, generator=gen) + 0.5) * (idx < local)
    ins = [x, order, offsets, weights, *experts("fp4", gen, lead=(local,))]
    op = GroupedSwiglu(limit=LIMIT, act_quant=True)
    (got,) = run_kernel(op, ins, kernel_cache)
    (want,) = op.run(dequantized(ins))
    torch.testing.assert_close(got, want, **TOL[torch.float32])
    others = int(offsets[local])
    assert (got.view(-1, D)[others:] == 0).all() and others < idx.numel()
