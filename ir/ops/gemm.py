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


@register
@dataclass(frozen=True)
class MergedLinear(Op):
    """Sibling `linear`s of one input x in one launch (`passes/merge_linears.py`): part i is
    y_i = x W_iᵀ with its own weight, `out_dtype` and `act_quant`, as the `linear` it
    replaces, and its own result. Operands (x, weight0, weight1, ...)."""

    kind = "merged_linear"
    out_dtypes: tuple[str, ...] = ()  # per part, as Linear's out_dtype
    act_quant: tuple[bool, ...] = ()  # per part, as Linear's act_quant
    roles: tuple[Projection, ...] = field(default=(), compare=False)  # per part, as Linear's role

    def __post_init__(self) -> None:  # a plan read back from JSON gives lists
        object.__setattr__(self, "out_dtypes", tuple(self.out_dtypes))
        object.__setattr__(self, "act_quant", tuple(self.act_quant))
        roles = self.roles or (Projection.NONE,) * len(self.out_dtypes)
        object.__setattr__(self, "roles", tuple(as_role(self, Projection, r) for r in roles))

    @property
    def quantised_operands(self) -> frozenset[str]:
        return frozenset(self.operand_roles()[1:])

    def parts(self) -> tuple[Linear, ...]:
        return tuple(
            Linear(d, q, r)
            for d, q, r in zip(self.out_dtypes, self.act_quant, self.roles, strict=True)
        )

    def operand_roles(self):
        return ("x", *(f"weight{i}" for i in range(len(self.out_dtypes))))

    def result_roles(self):
        return tuple(f"out{i}" for i in range(len(self.out_dtypes)))

    def roundings(self):
        return frozenset({("act_quant", True)}) if any(self.act_quant) else frozenset()

    def infer(self, ins):
        self.expect(len(ins) == len(self.out_dtypes) + 1 >= 3, f"{len(ins)} operands")
        return tuple(part.infer([ins[0], w])[0] for part, w in zip(self.parts(), ins[1:]))

    def run(self, ins):
        return tuple(part.run([ins[0], w])[0] for part, w in zip(self.parts(), ins[1:]))
