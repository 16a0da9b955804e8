"""The small row-wise templates (Triton) against their ops' reference semantics: RMSNorm
(weighted, and weightless per head), RoPE (forward and inverse, with and without YaRN),
hc_expand, add, embed and quant_sim. Tolerances: fp32 1e-5; bf16 1.6e-2 relative (one
rounding apart); the copies (hc_expand, embed) and the FP8 rounding (exact integer
arithmetic on the bits, values exact in either dtype) must be exact."""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.ir.ops.core import Add, Embed, QuantSim
from v4c.ir.ops.hc import HcExpand
from v4c.ir.ops.norm import RmsNorm
from v4c.ir.ops.rope import Rope

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}
EXACT = dict(rtol=0, atol=0)
YARN = (16.0, 65536, 32.0, 1.0)


def check(op, ins: list[torch.Tensor], root, tol: dict) -> None:
    got = run_kernel(op, ins, root)
    want = op.run(ins)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape, weighted",
    [
        ((2, 3, 96), True),  # a dim that is not a power of two
        ((2, 3, 4, 64), False),  # the per-head q norm
        ((1, 2, 4, 256), True),  # hnorm over [B,T,n,D] streams
    ],
)
def test_rms_norm(shape, weighted, dtype, kernel_cache):
    gen = torch.Generator().manual_seed(0)
    ins = [torch.randn(shape, generator=gen).to(dtype)]
    if weighted:
        ins.append(1 + 0.1 * torch.randn(shape[-1], generator=gen))  # fp32, as checkpoints keep it
    check(RmsNorm(eps=1e-6, weighted=weighted), ins, kernel_cache, TOL[dtype])


@pytest.mark.parametrize(
    "shape, rope_dim, yarn, inverse, dtype",
    [
        ((2, 3, 4, 96), 32, None, False, torch.bfloat16),  # q heads, 64 channels copied
        ((2, 3, 4, 96), 32, YARN, True, torch.float32),  # the inverse RoPE on the attention output
        ((2, 3, 64), 64, YARN, False, torch.float32),  # kv: every channel rotates
    ],
)
def test_rope(shape, rope_dim, yarn, inverse, dtype, kernel_cache):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(dtype)
    positions = torch.randint(0, 70000, shape[:2], generator=gen)
    op = Rope(rope_dim, 160000.0 if yarn else 10000.0, yarn, inverse=inverse)
    check(op, [x, positions], kernel_cache, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hc_expand(dtype, kernel_cache):
    h = torch.randn(2, 3, 96, generator=torch.Generator().manual_seed(0)).to(dtype)
    check(HcExpand(mult=4), [h], kernel_cache, EXACT)


@pytest.mark.parametrize(
    "dtypes", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32)]
)
def test_add(dtypes, kernel_cache):
    """Over 1024 elements (two flat blocks); b may be wider than a: the sum is cast to a's dtype."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2, 3, 4, 96, generator=gen).to(t) for t in dtypes)
    check(Add(), [a, b], kernel_cache, TOL[dtypes[0]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_embed(dtype, kernel_cache):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 96, generator=gen).to(dtype)
    ids = torch.randint(0, 50, (2, 3), generator=gen)
    check(Embed(), [ids, weight], kernel_cache, EXACT)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 3, 4, 64), (1, 2, 2, 96)])  # q heads; not a power of 2
def test_official_q_norm_is_bitwise(shape, dtype, kernel_cache):
    """`inline` (numerics official): the weightless q norm op by op in q's dtype. In bf16
    each rounding is the reference's (on the bits): bit for bit its result, which differs
    from the fp32 norm's (the roundings are on); in fp32 nothing rounds and only the order
    of the mean's sum differs (TOL)."""
    gen = torch.Generator().manual_seed(1)
    x = (3 * torch.randn(shape, generator=gen)).to(dtype)
    op = RmsNorm(eps=1e-6, weighted=False, inline=True)
    check(op, [x], kernel_cache, EXACT if dtype == torch.bfloat16 else TOL[dtype])
    (plain,) = RmsNorm(eps=1e-6, weighted=False).run([x])
    assert torch.equal(plain, op.run([x])[0]) == (dtype == torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape, block, dims",
    [((2, 3, 96), 64, 80), ((1, 3, 256), 128, 0)],  # KV nope dims (a partial block); all
)
def test_quant_sim(shape, block, dims, dtype, kernel_cache):
    """The official FP8 rounding, rows scaled over decades so the power-of-two scales vary;
    exact, and it changes the values."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=gen) * 10 ** torch.randn(*shape[:-1], 1, generator=gen)
    ins = [x.to(dtype)]
    op = QuantSim(block, dims)
    check(op, ins, kernel_cache, EXACT)
    assert not torch.equal(op.run(ins)[0], ins[0])
