"""gate_route (Triton): the router's GEMM and moe_route in one launch up to ROUTE_TOKENS
tokens, against the op's reference semantics (linear, then moe_route) and, bit for bit,
against the two unfused kernels (the dense GEMM family's `linear`, then `moe_route`): the
fused launch runs the same GEMM helpers in the same run order and the same route helpers on
the logits it wrote, so its logits, picks (ties included), weights and sort are theirs.

Cases: score and hash gates, 8 experts top-2 of 256 inputs (the GEMM split in 4 runs at
decode, one program each: the last tile's last program routes), with expert parallelism's
`first` once; 1 token, 3 tokens (fused) and 6 tokens (the GEMM, then the route's launches).
Token 0 has a tie for its second pick (two equal weight rows): the lower id must win.
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.codegen.params import describe
from v4c.ir.ops.gemm import Linear
from v4c.ir.ops.moe import GateRoute, MoeRoute

E, D, K, V = 8, 256, 2, 50


def operands(gate, tokens, gen, local=0):
    x = torch.randn(1, tokens, D, generator=gen).to(torch.bfloat16)
    weight = (torch.randn(E, D, generator=gen) / 16).to(torch.bfloat16)
    # token 0: expert 0 first, experts 2 and 5 tie for the second pick (equal rows): 2 wins.
    # Its inputs are multiples of 1/8 up to 2 and those rows ±1/64, ±1/32: every partial sum
    # is a multiple of 2^-9 below 2^4, exact in fp32 in any order, so the tie is exact.
    x[0, 0] = torch.randint(-16, 17, (D,), generator=gen) / 8
    sign = torch.sign(x[0, 0].float()) / 64
    weight[0], weight[2], weight[5] = 2 * sign, sign, sign
    if gate == "hash":
        rest = [torch.randint(0, V, (1, tokens), generator=gen),
                torch.stack([torch.randperm(E, generator=gen)[:K] for _ in range(V)])]  # fmt: skip
    else:
        rest = [torch.zeros(E)]  # no bias: the tie stays a tie
    return [x, weight, *rest] + ([torch.tensor([2])] if local else [])


@pytest.mark.parametrize("tokens", [1, 3, 6])
@pytest.mark.parametrize("gate, local", [("score", 0), ("hash", 0), ("score", 4)])
def test_matches_unfused(gate, local, tokens, kernel_cache):
    gen = torch.Generator().manual_seed(tokens)
    ins = operands(gate, tokens, gen, local)
    groups = E + 1 if local else E
    route = MoeRoute(gate, K, 1.5, "sqrtsoftplus", True, local_experts=local, num_experts=groups)
    op = GateRoute(gate, K, 1.5, "sqrtsoftplus", True, local_experts=local, num_experts=groups)
    made = jit.params_for(op.kind, op.attrs(), [describe(t) for t in ins])
    assert made.gemm.split_ctas and made.gemm.split == 4  # the decode form: 4 runs
    got = run_kernel(op, ins, kernel_cache, made)
    (logits,) = run_kernel(Linear("fp32"), ins[:2], kernel_cache)
    unfused = run_kernel(route, [logits, *ins[2:]], kernel_cache)
    for a, b in zip(got, [*unfused, logits], strict=True):
        assert torch.equal(a, b)
    want = op.run(ins)
    # logits: fp32 sums of 256 bf16 products in other orders (a few fp32 ulps of the sum);
    # weights: the scores of those logits, normalised over K = 2 (a few ulps more)
    torch.testing.assert_close(got[5], want[5], rtol=1e-5, atol=1e-5)
    # ids against the reference past token 0, whose tie torch.topk breaks either way; the
    # sort of the kernel's ids is the unfused sort's (above), tested against its reference
    # in test_moe
    assert torch.equal(got[1][:, 1:], want[1][:, 1:])
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    if gate == "score":  # the tie went to the lower id (kernels/moe.py `top_k`); with EP,
        # expert 0 is another rank's (the empty group `local`), 2 is this rank's 0
        assert got[1][0, 0].tolist() == ([0, 2] if not local else [local, 0])
