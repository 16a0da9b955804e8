"""The MoE ops: the whole routed MoE and the shared expert as the builder emits them, and
the dispatch schedule `schedule_moe` expands them into (gate -> sort by expert -> grouped
SwiGLU GEMMs -> weighted combine with the shared expert).

Shape legend: B rows, T tokens, D hidden, E experts, K top-k, I expert width.
Tokens are flattened to N = B*T rows for the semantics and reshaped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from v4c.ir.op import Op, register
from v4c.ir.ops.gemm import Linear
from v4c.ir.types import TensorType


@dataclass(frozen=True)
class _Gate(Op):
    gate: str = "score"  # "score": top-k of score + bias; "hash": tid2eid[token id]
    top_k: int = 6
    route_scale: float = 1.0
    scoring_func: str = "sqrtsoftplus"
    norm_topk_prob: bool = True
    # each gate op ends with `local_experts: int = 0` (after its own fields, which callers
    # pass by position): with expert parallelism, the experts this rank holds, from the
    # `first` operand on (routing is over all experts, then mapped to local ids:
    # `semantics.moe.local_experts`); 0: all

    # the op multiplies x by the router weight itself (`moe`); else its first operand is
    # the router's fp32 logits x Wgᵀ, a linear of the plan (`moe_gate`)
    router: ClassVar[bool] = True

    def gate_roles(self) -> tuple[str, ...]:
        if self.router:
            roles = (
                ("x", "ids", "gate_weight", "tid2eid")
                if self.gate == "hash"
                else ("x", "gate_weight", "bias")
            )
        else:
            roles = ("logits", "ids", "tid2eid") if self.gate == "hash" else ("logits", "bias")
        return roles + ("first",) if self.local_experts else roles

    def route(self, ins):
        """(weights [N,K] fp32, idx [N,K]) from this op's gate operands; with
        `local_experts`, idx are this rank's expert ids (`local_experts` for another's)."""
        from v4c.ir.semantics.moe import hash_route, local_experts, router_logits, score_route

        kw = dict(
            route_scale=self.route_scale,
            scoring_func=self.scoring_func,
            norm_topk_prob=self.norm_topk_prob,
        )
        op = dict(zip(self.gate_roles(), ins))
        if self.router:
            z = router_logits(op["x"].flatten(0, -2), op["gate_weight"])
        else:
            z = op["logits"].flatten(0, -2).float()
        if self.gate == "hash":
            routed = hash_route(z, op["ids"].flatten(), op["tid2eid"], **kw)
        else:
            routed = score_route(z, op["bias"], top_k=self.top_k, **kw)
        if self.local_experts:
            return local_experts(*routed, op["first"], self.local_experts)
        return routed


@register
@dataclass(frozen=True)
class Moe(_Gate):
    """The routed experts of one layer, unscheduled: gate, top-k, SwiGLU experts, combine."""

    kind = "moe"
    rounding_attrs = ("act_quant",)
    limit: float = 10.0
    act_quant: bool = False  # numerics: official: FP8 GEMM inputs, GEMM outputs in bf16
    local_experts: int = 0  # see _Gate

    def operand_roles(self):
        return self.gate_roles() + ("w1", "w2", "w3")

    def infer(self, ins):
        x, w1 = ins[0], ins[-3]
        self.expect(len(w1.shape) == 3 and w1.shape[2] == x.shape[-1], f"w1 {w1} for {x}")
        local = self.local_experts
        self.expect(local in (0, w1.shape[0]), f"w1 {w1} holds {local} local experts")
        return (x,)

    def run(self, ins):
        from v4c.ir.semantics.moe import moe

        weights, idx = self.route(ins[:-3])
        y = moe(
            ins[0].flatten(0, -2),
            weights,
            idx,
            *ins[-3:],
            limit=self.limit,
            act_quant=self.act_quant,
        )
        return (y.view_as(ins[0]),)


@register
@dataclass(frozen=True)
class Swiglu(Op):
    """One dense SwiGLU expert (the shared expert), clamped at `limit`."""

    kind = "swiglu"
    operands = ("x", "w1", "w2", "w3")
    quantised_operands = frozenset({"w1", "w2", "w3"})
    rounding_attrs = ("act_quant",)
    limit: float = 10.0
    act_quant: bool = False

    def infer(self, ins):
        x, w1, w2, w3 = ins
        self.expect(
            w1.shape == w3.shape == w2.shape[::-1] and w1.shape[1] == x.shape[-1],
            f"{w1} {w2} for {x}",
        )
        return (x,)

    def run(self, ins):
        from v4c.ir.semantics.moe import swiglu

        x, w1, w2, w3 = ins
        y = swiglu(x.flatten(0, -2), w1, w2, w3, limit=self.limit, act_quant=self.act_quant)
        return (y.view_as(x),)


@register
@dataclass(frozen=True)
class MoeGate(_Gate):
    """Routing of the schedule from the router's logits [B,T,E] fp32 (the linear before it):
    (weights [B,T,K] fp32, expert ids [B,T,K])."""

    kind = "moe_gate"
    results = ("weights", "idx")
    router = False
    local_experts: int = 0  # see _Gate

    def operand_roles(self):
        return self.gate_roles()

    def infer(self, ins):
        logits = ins[0]
        self.expect(logits.dtype == "fp32", f"logits {logits}: the router's are fp32")
        k = ins[2].shape[1] if self.gate == "hash" else self.top_k
        bt = logits.shape[:-1]
        return (TensorType((*bt, k), "fp32"), TensorType((*bt, k), "i64"))

    def run(self, ins):
        weights, idx = self.route(ins)
        bt = ins[0].shape[:-1]
        return (weights.view(*bt, -1), idx.view(*bt, -1))


@register
@dataclass(frozen=True)
class MoeSort(Op):
    """Token slots sorted by expert: (order [B,T,K] flat slot ids, offsets [E+1])."""

    kind = "moe_sort"
    operands = ("idx",)
    results = ("order", "offsets")
    num_experts: int = 1

    def infer(self, ins):
        (idx,) = ins
        return (idx, TensorType((self.num_experts + 1,), "i64"))

    def run(self, ins):
        from v4c.ir.semantics.moe import moe_sort

        (idx,) = ins
        order, offsets = moe_sort(idx.flatten(0, -2), self.num_experts)
        return (order.view_as(idx), offsets)


@register
@dataclass(frozen=True)
class GroupedSwiglu(Op):
    """Every expert's SwiGLU over its group of sorted token slots (grouped GEMMs); the
    routing weight scales h before w2, as the official code does."""

    kind = "grouped_swiglu"
    operands = ("x", "order", "offsets", "weights", "w1", "w2", "w3")
    quantised_operands = frozenset({"w1", "w2", "w3"})
    rounding_attrs = ("act_quant",)
    limit: float = 10.0
    act_quant: bool = False

    def infer(self, ins):
        x, order = ins[0], ins[1]
        return (x.with_shape(*order.shape, x.shape[-1]),)

    def run(self, ins):
        from v4c.ir.semantics.moe import grouped_swiglu

        x, order, offsets, weights, w1, w2, w3 = ins
        y = grouped_swiglu(
            x.flatten(0, -2), order.flatten(), offsets, weights.flatten(0, -2), w1, w2, w3,
            limit=self.limit, act_quant=self.act_quant,
        )  # fmt: skip
        return (y.view(*order.shape, -1),)


@register
@dataclass(frozen=True)
class MoeCombine(Op):
    """Scatter-add the expert outputs back to their tokens, plus the shared expert's: the sum
    is fp32 and rounded once, as the official MoE accumulates (routed and shared) in fp32."""

    kind = "moe_combine"
    with_shared: bool = True
    # the second operand is each slot's row in the sorted order (`rows`, the inverse of
    # `order`, which `moe_route` writes as it sorts), so the kernel needs no inversion
    rows: bool = False

    def operand_roles(self):
        roles = ("y_sorted", "rows" if self.rows else "order")
        return roles + ("shared",) if self.with_shared else roles

    def infer(self, ins):
        y, order = ins[0], ins[1]
        return (y.with_shape(*order.shape[:-1], y.shape[-1]),)

    def run(self, ins):
        from v4c.ir.semantics.moe import moe_combine, moe_gather

        y, order = ins[0], ins[1]
        bt = order.shape[:-1]
        n = order[..., 0].numel()
        if self.rows:
            out = moe_gather(y.flatten(0, -2), order.flatten(), order.shape[-1]).view(*bt, -1)
        else:
            out = moe_combine(y.float().flatten(0, -2), order.flatten(), n).view(*bt, -1)  # fp32
        if self.with_shared:
            return ((out + ins[2].float()).to(ins[2].dtype),)
        return (out.to(y.dtype),)


@register
@dataclass(frozen=True)
class MoeRoute(MoeGate):
    """moe_gate + the moe_sort of its expert ids, in one launch at decode: (weights, idx) as
    the gate's, (order, offsets) as the sort's, and `rows`, each slot's row in the sorted
    order (the inverse of order: what the combine reads)."""

    kind = "moe_route"
    results = ("weights", "idx", "order", "offsets", "rows")
    local_experts: int = 0  # see _Gate
    num_experts: int = 1  # the sort's groups: the experts (+ 1 for other ranks' with EP)

    def infer(self, ins):
        weights, idx = super().infer(ins)
        return weights, idx, idx, TensorType((self.num_experts + 1,), "i64"), idx

    def run(self, ins):
        from v4c.ir.semantics.moe import sorted_rows

        weights, idx = super().run(ins)
        order, offsets = MoeSort(self.num_experts).run([idx])
        return weights, idx, order, offsets, sorted_rows(order.flatten()).view_as(idx)


@register
@dataclass(frozen=True)
class GateRoute(MoeRoute):
    """The router's projection (a `linear` to fp32 logits) + moe_route, in one launch at
    decode: the gate GEMM's last program to finish routes the tokens. Results: moe_route's,
    then the logits (kept: the route of a longer step reads them in launches of its own)."""

    kind = "gate_route"
    results = ("weights", "idx", "order", "offsets", "rows", "logits")
    quantised_operands = frozenset({"weight"})

    def operand_roles(self):
        return ("x", "weight", *super().operand_roles()[1:])

    def infer(self, ins):
        (logits,) = Linear("fp32").infer(ins[:2])
        return (*super().infer([logits, *ins[2:]]), logits)

    def run(self, ins):
        (logits,) = Linear("fp32").run(ins[:2])
        return (*super().run([logits, *ins[2:]]), logits)
