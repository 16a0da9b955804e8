"""The number formats against values worked out by hand (bit layouts of e4m3, e2m1, E8M0),
torch's own float8 casts, and an explicit Kronecker-product Hadamard matrix."""

from __future__ import annotations

import math

import pytest
import torch

from tests.runtime.checkpoint_helpers import one_thread
from v4c.ir.semantics.quant import (
    act_quant_fp8,
    e8m0_to_float,
    fp4_dequantize,
    fp4_quantize,
    fp4_sim,
    fp8_block_dequantize,
    fp8_block_quantize,
    fp8_sim,
    hadamard,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def u8(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8)


def e8m0(values) -> torch.Tensor:
    return u8(values).view(torch.float8_e8m0fnu)


# -- E8M0 ----------------------------------------------------------------------------------


def test_e8m0_bytes_by_hand():
    assert e8m0_to_float(e8m0([127, 130, 126, 0, 254])).tolist() == [
        1.0,
        8.0,
        0.5,
        2.0**-127,
        2.0**127,
    ]


def test_e8m0_matches_torch_cast():
    every = e8m0(list(range(255)))  # 255 is NaN
    assert torch.equal(e8m0_to_float(every), every.float())


@pytest.mark.parametrize(
    ("amax", "byte"),
    [(448.0, 127), (449.0, 128), (896.0, 128), (1792.0, 129), (1.0, 119), (3.0, 120), (0.0, 105)],
)
def test_fp8_scale_choice(amax, byte):
    # s = 2^ceil(log2(max(amax, 1e-4) / 448)); e.g. 1/448 = 2^-8.81 -> 2^-8 (byte 119),
    # 0 -> 1e-4/448 = 2^-22.09 -> 2^-22 (byte 105); 896/448 = 2 exactly -> 2^1
    w = torch.zeros(128, 128)
    w[5, 7] = -amax
    assert fp8_block_quantize(w)[1].view(torch.uint8).item() == byte


@pytest.mark.parametrize(
    ("amax", "byte"), [(6.0, 127), (7.0, 128), (12.0, 128), (3.0, 126), (0.0, 1)]
)
def test_fp4_scale_choice(amax, byte):
    # s = 2^ceil(log2(max(amax, 6*2^-126) / 6)); 0 -> 2^-126 (byte 1)
    w = torch.zeros(1, 32)
    w[0, 3] = amax
    assert fp4_quantize(w)[1].view(torch.uint8).item() == byte


# -- FP8 e4m3 block weights ----------------------------------------------------------------

# value -> e4m3 byte (sign | 4 exponent bits, bias 7 | 3 mantissa bits), scale 1
E4M3_BY_HAND = [
    (448.0, 0x7E),  # 1.75 * 2^8: exponent 15, mantissa 110
    (1.0, 0x38),
    (0.5, 0x30),
    (-2.25, 0xC1),  # -1.125 * 2^1
    (240.0, 0x77),  # 1.875 * 2^7
    (2.0**-9, 0x01),  # smallest subnormal
    (1.0625, 0x38),  # halfway 1.0 / 1.125: ties to even mantissa 000
    (1.1875, 0x3A),  # halfway 1.125 / 1.25: ties to even mantissa 010
    (0.0, 0x00),
]


def test_fp8_e4m3_encodings_by_hand():
    w = torch.zeros(1, 128)
    w[0, : len(E4M3_BY_HAND)] = torch.tensor([v for v, _ in E4M3_BY_HAND])  # amax 448: scale 1
    q, scale = fp8_block_quantize(w)
    assert scale.view(torch.uint8).tolist() == [[127]]
    assert q.view(torch.uint8)[0, : len(E4M3_BY_HAND)].tolist() == [b for _, b in E4M3_BY_HAND]


def test_fp8_partial_edge_blocks_by_hand():
    w = torch.zeros(130, 200)  # 2 x 2 blocks, the last row/column of blocks partial
    w[0, 0], w[1, 127] = 1792.0, 448.0  # block (0,0): scale 4
    w[0, 130], w[3, 131] = 1.0, 0.3  # block (0,1): scale 2^-8; 0.3 * 256 = 76.8 -> 80
    w[129, 5], w[128, 6] = 3.0, 1.0  # block (1,0): scale 2^-7; 384 and 128 are exact
    q, scale = fp8_block_quantize(w)
    assert q.shape == (130, 200) and scale.shape == (2, 2)
    assert scale.view(torch.uint8).tolist() == [[129, 119], [120, 105]]
    deq = fp8_block_dequantize(q, scale, dtype=torch.float32)
    assert deq[0, 0] == 1792.0 and deq[1, 127] == 448.0
    assert deq[0, 130] == 1.0 and deq[3, 131] == 80 / 256
    assert deq[129, 5] == 3.0 and deq[128, 6] == 1.0
    assert deq[129, 199] == 0.0


def test_fp8_dequantize_by_hand():
    q = u8([[0x38, 0xC1]]).view(torch.float8_e4m3fn)  # 1.0, -2.25
    out = fp8_block_dequantize(q, e8m0([[130]]), dtype=torch.float32)
    assert out.tolist() == [[8.0, -18.0]]


def test_fp8_block_matches_torch_cast():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 131, 259, generator=gen) * torch.rand(3, 1, 259, generator=gen) * 5
    q, scale = fp8_block_quantize(w)
    deq = fp8_block_dequantize(q, scale, dtype=torch.float32)
    for e in range(3):
        for bo in range(0, 131, 128):
            for bi in range(0, 259, 128):
                blk = w[e, bo : bo + 128, bi : bi + 128]
                s = 2.0 ** math.ceil(math.log2(max(blk.abs().max().item(), 1e-4) / 448))
                ref = (blk / s).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s
                assert torch.equal(deq[e, bo : bo + 128, bi : bi + 128], ref)
    assert torch.equal(fp8_block_dequantize(q, scale), deq.to(torch.bfloat16))  # exact in bf16


# -- FP4 e2m1 experts ----------------------------------------------------------------------


def test_fp4_nibble_order_by_hand():
    # 0x2B: low nibble 0xB = sign + code 3 -> -1.5 (element 0); high nibble 0x2 -> 1.0
    # 0x73: low 3 -> 1.5, high 7 -> 6.0;  0xF9: low 9 -> -0.5, high 15 -> -6.0
    packed = u8([[0x2B, 0x73, 0xF9]]).view(torch.int8)
    out = fp4_dequantize(packed, e8m0([[127]]), torch.float32)
    assert out.tolist() == [[-1.5, 1.0, 1.5, 6.0, -0.5, -6.0]]
    assert fp4_dequantize(packed[:, :1], e8m0([[128]]), torch.float32).tolist() == [[-3.0, 2.0]]


ROW = [6.0, -0.5, 1.25, 1.75, 2.5, 3.5, 5.0, 0.25, 0.75, -3.0]
# codes: 7, 9, 2 (tie -> 1.0), 4 (tie -> 2.0), 4 (tie -> 2.0), 6 (tie -> 4.0), 6 (tie -> 4.0),
# 0 (tie -> 0), 2 (tie -> 1.0), 13; packed low nibble first:
ROW_BYTES = [0x97, 0x42, 0x64, 0x06, 0xD2]
ROW_ROUNDED = [6.0, -0.5, 1.0, 2.0, 2.0, 4.0, 4.0, 0.0, 1.0, -3.0]


def test_fp4_quantize_by_hand():
    w = torch.zeros(2, 64)
    w[0, :10] = torch.tensor(ROW)
    w[1, 32:42] = torch.tensor(ROW) / 8  # second block of row 1: scale 2^-3
    packed, scale = fp4_quantize(w)
    assert packed.dtype == torch.int8 and packed.shape == (2, 32) and scale.shape == (2, 2)
    assert scale.view(torch.uint8).tolist() == [[127, 1], [1, 124]]
    assert packed.view(torch.uint8)[0, :5].tolist() == ROW_BYTES
    assert packed.view(torch.uint8)[1, 16:21].tolist() == ROW_BYTES
    out = fp4_dequantize(packed, scale, torch.float32)
    assert out[0, :10].tolist() == ROW_ROUNDED
    assert out[1, 32:42].tolist() == [v / 8 for v in ROW_ROUNDED]


def test_fp4_stacked_experts_and_exactness():
    w = torch.randn(4, 8, 64, generator=torch.Generator().manual_seed(1))
    packed, scale = fp4_quantize(w)
    assert packed.shape == (4, 8, 32) and scale.shape == (4, 8, 2)
    deq = fp4_dequantize(packed, scale, torch.float32)
    assert torch.equal(deq[2], fp4_dequantize(*fp4_quantize(w[2]), torch.float32))
    assert torch.equal(fp4_dequantize(*fp4_quantize(deq), torch.float32), deq)  # idempotent
    assert torch.equal(fp4_dequantize(packed, scale), deq.to(torch.bfloat16))


# -- activation simulations ----------------------------------------------------------------


def test_act_quant_fp8_by_hand():
    x = torch.zeros(2, 256)
    x[0, :4] = torch.tensor([1.0, 0.3, -0.3, 0.001])  # amax 1: s = 2^-8
    x[0, 4] = 2.0**-12  # * 256 = 2^-4: exact
    x[0, 128], x[0, 129] = 448.0, 2.0**-12  # block 2: s = 1, 2^-12 < 2^-10 flushes to 0
    y = act_quant_fp8(x)
    # 0.3 * 256 = 76.8 -> 80 (spacing 8 in [64, 128)); 0.001 * 256 = 0.256 -> 0.25
    assert y[0, :5].tolist() == [1.0, 0.3125, -0.3125, 0.25 / 256, 2.0**-12]
    assert y[0, 128:130].tolist() == [448.0, 0.0]
    assert torch.equal(y[1], torch.zeros(256))  # the amax floor: no 0/0


def test_fp8_sim_blocks_of_64():
    x = torch.zeros(1, 128)
    x[0, 0], x[0, 64] = 448.0, 2.0**-12
    assert fp8_sim(x)[0, 64] == 2.0**-12  # its own block of 64: s = 2^-19
    assert act_quant_fp8(x)[0, 64] == 0.0  # shares the block of 448


def test_act_quant_fp8_matches_torch_cast():
    x = (torch.randn(3, 5, 256, generator=torch.Generator().manual_seed(2)) * 3).to(torch.bfloat16)
    y = act_quant_fp8(x)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    for blk_in, blk_out in zip(x.float().reshape(-1, 128), y.float().reshape(-1, 128)):
        s = 2.0 ** math.ceil(math.log2(max(blk_in.abs().max().item(), 1e-4) / 448))
        ref = (blk_in / s).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s
        assert torch.equal(blk_out, ref.to(torch.bfloat16).float())


def test_hadamard_by_hand():
    # H4 (Sylvester) = [[1,1,1,1],[1,-1,1,-1],[1,1,-1,-1],[1,-1,-1,1]]; [1,2,3,4] H4 / 2
    assert hadamard(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [5.0, -1.0, -2.0, 0.0]


def test_hadamard_matches_kronecker_matrix():
    h = torch.ones(1, 1)
    for _ in range(7):
        h = torch.kron(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), h)  # Sylvester H_128
    x = torch.randn(3, 2, 128, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(hadamard(x), x @ h.T / 128**0.5, atol=1e-5)
    assert torch.allclose(hadamard(hadamard(x)), x, atol=1e-5)  # orthonormal, symmetric
    assert hadamard(x.to(torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="power of two"):
        hadamard(torch.zeros(96))


def test_fp4_sim_by_hand():
    x = torch.zeros(3, 32)
    x[0, :4] = torch.tensor([3.0, 0.7, -0.2, 1.1])  # amax 3: s = 0.5 -> 6, 1.4, -0.4, 2.2
    x[1, :8] = torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])  # s = 1: ties
    y = fp4_sim(x)
    assert y[0, :4].tolist() == [3.0, 0.75, -0.25, 1.0]
    assert y[1, :8].tolist() == [6.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    assert torch.equal(y[2], torch.zeros(32))  # the amax floor: no 0/0
    assert fp4_sim(x.to(torch.bfloat16)).dtype == torch.bfloat16
