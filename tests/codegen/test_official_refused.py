"""Where a Triton template does not compute numerics: official yet, a launch that asks for an
official rounding is refused with its name instead of silently computing plain numerics
(the compressor's refusal is tested beside its template; the expert GEMMs, sparse attention
and the indexer compute it: test_expert_gemm.py, test_attention.py, test_indexer.py)."""

from __future__ import annotations


import pytest

from v4c.codegen import jit
from v4c.ir.ops.core import RmsNorm
from v4c.ir.ops.fused import RmsNormRope


@pytest.mark.parametrize(
    "op, message",
    [
        (RmsNorm(weighted=False, inline=True), "bf16 q norm"),
        (RmsNormRope(weighted=False, inline=True), "bf16 q norm"),
    ],
)
def test_official_bf16_points_are_refused(op, message):
    with pytest.raises(ValueError, match=message):
        jit.params_for(op.kind, op.attrs(), [((1,), "bf16")] * len(op.operand_roles()))
