"""The dense GEMM family: `linear` (every dense projection of the plan) and `grouped_linear`
(wo_a, each group of heads projected on its own). Their kernels are `codegen/ops/gemm.py`'s.

Shape legend: B rows, T tokens, H heads, d head dim, G groups, R a group's output dims.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from v4c.ir.op import Op, register
from v4c.ir.roles import Projection, as_role
from v4c.ir.types import TensorType, torch_dtype


@register
@dataclass(frozen=True)
class Linear(Op):
    """y = x Wᵀ, fp32 accumulation; `out_dtype` fp32 for the lm_head. `act_quant` (numerics
    official, an FP8 weight): x rounded to FP8 per 128-block first, as the official W8A8
    GEMM does (§12); the FP8 weight is read as stored."""

    kind = "linear"
    operands = ("x", "weight")
    quantised_operands = frozenset({"weight"})
    rounding_attrs = ("act_quant",)
    out_dtype: str = "bf16"
    act_quant: bool = False
    role: Projection = field(default=Projection.NONE, compare=False)  # see `v4c.ir.roles`

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", as_role(self, Projection, self.role))

    def infer(self, ins):
        x, w = ins
        self.expect(len(w.shape) == 2 and x.shape[-1] == w.shape[1], f"{x} x {w}ᵀ")
        return (TensorType((*x.shape[:-1], w.shape[0]), self.out_dtype),)

    def run(self, ins):
        x, w = ins
        from v4c.ir.semantics.invariant import matmul

        held = x.dtype if x.dtype.is_floating_point else None  # the run's dtype for IR-bf16
        if self.act_quant:
            from v4c.ir.semantics.quant import act_quant_fp8

            x = act_quant_fp8(x.float())
        return (matmul(x.float(), w.float()).to(torch_dtype(self.out_dtype, held)),)


@register
@dataclass(frozen=True)
class GroupedLinear(Op):
    """wo_a: each group of H/G heads projected on its own to R dims (§8.4)."""

    kind = "grouped_linear"
    operands = ("o", "weight")
    quantised_operands = frozenset({"weight"})
    groups: int = 1

    def infer(self, ins):
        o, w = ins
        *bt, h, d = o.shape
        self.expect(
            w.shape[1] * self.groups == h * d and w.shape[0] % self.groups == 0, f"{w} for {o}"
        )
        return (o.with_shape(*bt, w.shape[0]),)

    def run(self, ins):
        from v4c.ir.semantics.attention import grouped_linear

        return (grouped_linear(*ins, self.groups),)
