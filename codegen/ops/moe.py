"""Parameters of the MoE templates: the gate, the sort of token slots by expert, the grouped
(routed) and dense (shared) SwiGLU experts, and the combine.

A weight operand is a plain tensor or a `QuantWeight`; its `WeightFormat` (the plan's) is a
constant of the template.
"""

from __future__ import annotations

from typing import Any, Literal

from v4c.codegen.jit import CodegenError
from v4c.codegen.ops.gemm import Linear
from v4c.codegen.params import (
    Dots,
    Operand,
    Operands,
    Template,
    template,
    tile,
    weight_format,
)
from v4c.ir.types import ir_dtype

Act = Literal["bf16", "fp32"]
Stored = Literal["bf16", "fp32", "fp8", "fp4"]
FLOATS = ("bf16", "fp32")  # a launch may name them as the IR does or as torch does
SMS = 132  # H100/H200 SXM: the programs a decode step's weight stream should reach at least


def expert_format(ops: list[Operand]) -> tuple[Stored, tuple[int, int]]:
    """The one format of an expert's weights -> (template format, scale block [out, in])."""
    formats = {weight_format(op) for op in ops}
    if len(formats) != 1:
        raise CodegenError(f"expert weights in mixed formats {sorted(map(str, formats))}")
    (fmt,) = formats
    name = fmt.kind if fmt.quantised else fmt.dtype
    if name not in ("bf16", "fp32", "fp8", "fp4"):
        raise CodegenError(f"unsupported expert weight format {fmt}")
    return name, fmt.block


def activation(dtype: str) -> Act:
    if ir_dtype(dtype) not in FLOATS:
        raise CodegenError(f"unsupported activation dtype {dtype!r}: bf16 or fp32")
    return ir_dtype(dtype)


@template("moe_gate")
class MoeGate(Template):
    gate: Literal["score", "hash"]
    experts: int
    top_k: int
    route_scale: float
    scoring_func: Literal["sqrtsoftplus", "sigmoid", "softmax"]
    normalize: bool  # the weights are normalised over the K picks
    local_experts: int = 0  # expert parallelism: this rank's experts, from `first` on

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> MoeGate:
        hashed = attrs["gate"] == "hash"
        top_k = ops["tid2eid"].shape[1] if hashed else attrs["top_k"]  # tid2eid [V, K]
        return cls(
            gate=attrs["gate"], experts=ops["logits"].shape[-1], top_k=top_k,
            route_scale=attrs["route_scale"], scoring_func=attrs["scoring_func"],
            normalize=attrs["norm_topk_prob"] and attrs["scoring_func"] != "softmax",
            local_experts=attrs.get("local_experts", 0),
        )  # fmt: skip


@template("moe_sort")
class MoeSort(Template):
    experts: int
    block: int = 128  # token slots per chunk of the counting sort

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> MoeSort:
        return cls(experts=attrs["num_experts"])


# Tokens up to which `moe_route` gates in the sort's one program (one launch); more are gated
# by a launch of one program per token first. A token's gate is the same helper, at the same
# warps, in either launch: its weights and ids do not depend on the path (batch invariance).
ROUTE_TOKENS = 4


@template("moe_route")
class MoeRoute(MoeGate):
    TEMPLATE = "moe_route"  # not the gate's, which the class inherits
    groups: int  # the sort's expert groups (+ 1 for other ranks' experts with EP)
    route_tokens: int = ROUTE_TOKENS
    block: int = 128  # token slots per chunk of the counting sort

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> MoeRoute:
        gate = MoeGate.from_launch(attrs, ops)
        return cls(**gate.model_dump(), groups=attrs["num_experts"])


@template("gate_route")
class GateRoute(MoeRoute):
    """The router's GEMM (the dense GEMM family's constants, `gemm`) and moe_route in one
    launch up to `route_tokens` tokens: the GEMM's last program to finish gates the tokens
    and sorts their slots in one chunk of `block` (a stable sort: the order is the same
    whatever the chunk). Longer steps: the GEMM, then the route in launches of its own."""

    TEMPLATE = "gate_route"
    gemm: Linear

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> GateRoute:
        gemm = Linear.from_launch({"out_dtype": "fp32"}, ops)
        experts = ops["weight"].shape[0]
        logits = Operand((*ops["x"].shape[:-1], experts), "fp32")
        route = MoeRoute.from_launch(attrs, {**ops, "logits": logits})
        block = tile(ROUTE_TOKENS * route.top_k)
        return cls(**{**route.model_dump(), "block": block}, gemm=gemm)


class _Swiglu(Dots):
    dim: int  # D
    inter: int  # I
    limit: float
    act: Act
    weights: Stored
    scale_block: tuple[int, int]  # [out, in] elements per E8M0 scale; (1, 1) for plain tensors
    round: bool  # numerics official: the GEMM inputs rounded to FP8, their outputs to `act`
    block_i: int = 64  # outputs of w1/w3 per program
    block_d: int = 64  # outputs of w2 per program
    # reduction steps over D (w1/w3) and I (w2): one FP8 activation block, 128 or all of a
    # shorter dim; 128 for FP4 (a row's step: 64 bytes, four 16-byte copies)
    block_kd: int
    block_ki: int

    @classmethod
    def from_operands(cls, attrs: dict[str, Any], ops: Operands, **extra: Any) -> _Swiglu:
        """From the launch's attributes and its x, w1, w2, w3."""
        limit, (inter, dim) = attrs["limit"], ops["w1"].shape[-2:]
        fmt, scale_block = expert_format([ops[w] for w in ("w1", "w2", "w3")])
        if scale_block[1] & (scale_block[1] - 1) or (fmt == "fp4" and scale_block[1] % 8):
            raise CodegenError(f"{fmt} scale blocks of {scale_block[1]} inputs: a power of two"
                               + (", at least 8" if fmt == "fp4" else ""))  # fmt: skip
        lo = 128 if fmt == "fp4" else 16
        return cls(
            dim=dim, inter=inter, limit=limit, act=activation(ops["x"].dtype), weights=fmt,
            scale_block=scale_block, round=attrs.get("act_quant", False),
            block_kd=tile(dim, lo, 128), block_ki=tile(inter, lo, 128), **extra,
        )  # fmt: skip


@template("grouped_swiglu")
class GroupedSwiglu(_Swiglu):
    block_d: int = 128  # w2's outputs per program: 6 experts x D/128 programs at batch 1
    experts: int
    top_k: int
    others: bool = False  # offsets end with a group for other ranks' experts: rows of 0

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> GroupedSwiglu:
        experts = ops["w1"].shape[0]
        others = ops["offsets"].shape[0] == experts + 2
        return cls.from_operands(
            attrs, ops, experts=experts, top_k=ops["order"].shape[-1], others=others
        )


@template("swiglu")
class Swiglu(_Swiglu):
    split_d: int = 1  # ranges of the reduction over D (w1/w3), `splits`
    split_i: int = 1  # ranges of the reduction over I (w2)

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> Swiglu:
        p = cls.from_operands(attrs, ops)
        split_d = splits(-(-p.dim // p.block_kd), -(-p.inter // p.block_i))
        split_i = splits(-(-p.inter // p.block_ki), -(-p.dim // p.block_d))
        return p.model_copy(update=dict(split_d=split_d, split_i=split_i))


def splits(steps: int, blocks: int) -> int:
    """Ranges to cut a reduction of `steps` steps into, so that a decode step's `blocks`
    output blocks times the ranges cover the SMs: the least divisor of steps that does, or
    every step. From the GEMM's K and N only, never its rows (batch invariance)."""
    need = -(-SMS // blocks)
    return next((d for d in range(1, steps + 1) if steps % d == 0 and d >= need), steps)


@template("moe_combine")
class MoeCombine(Template):
    dim: int
    top_k: int
    with_shared: bool
    rows: bool = False  # given each slot's sorted row (moe_route's): no inversion launch
    block: int = 128  # slots per program of the inverse permutation
    block_d: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> MoeCombine:
        dim = ops["y_sorted"].shape[-1]  # [B,T,K,D]
        rows = attrs.get("rows", False)
        return cls(
            dim=dim, top_k=ops["rows" if rows else "order"].shape[-1],
            with_shared=attrs["with_shared"], rows=rows, block_d=tile(dim, 16, 256),
        )  # fmt: skip
