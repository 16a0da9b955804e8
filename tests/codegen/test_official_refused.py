"""The Triton templates do not compute numerics: official yet, so a launch that asks for an
official rounding is refused with its name instead of silently computing plain numerics
(the compressor's refusal is tested beside its template; sparse attention and the indexer
compute theirs)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from v4c.codegen import jit
from v4c.codegen.jit import CodegenError
from v4c.ir.ops.core import RmsNorm
from v4c.ir.ops.fused import RmsNormRope
from v4c.ir.ops.moe import GroupedSwiglu, Swiglu

D, I, E, K = 128, 64, 4, 2
X = ((1, 5, D), "bf16")


def test_experts_with_act_quant_are_refused():
    dense = [X, ((I, D), "bf16"), ((D, I), "bf16"), ((I, D), "bf16")]
    grouped = [X, ((1, 5, K), "i64"), ((E + 1,), "i64"), ((1, 5, K), "fp32"),
               ((E, I, D), "bf16"), ((E, D, I), "bf16"), ((E, I, D), "bf16")]  # fmt: skip
    for op, shapes in ((Swiglu(act_quant=True), dense), (GroupedSwiglu(act_quant=True), grouped)):
        jit.params_for(op.kind, replace(op, act_quant=False).attrs(), shapes)  # plain renders
        with pytest.raises(CodegenError, match="rounds the expert GEMMs"):
            jit.params_for(op.kind, op.attrs(), shapes)


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
