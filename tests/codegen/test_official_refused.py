"""Where a Triton template does not compute numerics: official yet, a launch that asks for an
official rounding is refused with its name instead of silently computing plain numerics
(the compressor's and the indexer's refusals are tested beside their templates; the expert
GEMMs compute it, tests/codegen/test_expert_gemm.py)."""

from __future__ import annotations


import pytest

from v4c.codegen import jit
from v4c.ir.ops.attention import SparseAttention
from v4c.ir.ops.core import RmsNorm
from v4c.ir.ops.fused import RmsNormRope


@pytest.mark.parametrize(
    "op, message",
    [
        (SparseAttention(round_probs=True), "rounds P to bf16"),
        (RmsNorm(weighted=False, inline=True), "bf16 q norm"),
        (RmsNormRope(weighted=False, inline=True), "bf16 q norm"),
    ],
)
def test_official_bf16_points_are_refused(op, message):
    with pytest.raises(ValueError, match=message):
        jit.params_for(op.kind, op.attrs(), [((1,), "bf16")] * len(op.operand_roles()))
