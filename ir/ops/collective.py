"""Collectives: the ops whose value depends on the other ranks of a TP × EP grid (or on
this rank's place in it), which the `shard` pass puts where the official code all-reduces.

Each names the `group` it runs in, an axis of `v4c.spec.parallel.Grid` (`tp`, `ep` or
`world`). Their reference semantics is `combine`: given the operands of every member of the
group, in index order, the results of every member. A communicator runs them: one that
simulates the group in one process calls `combine`, the torch.distributed one calls the
matching collective, which computes the same (`v4c.runtime.distributed`).
Shape legend: B rows, T tokens, V vocabulary, P parts (the group's size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from v4c.ir.op import Op, register
from v4c.ir.types import TensorType
from v4c.spec.parallel import AXES


@dataclass(frozen=True)
class Collective(Op):
    collective = True
    group: str = "world"

    def infer_group(self) -> None:
        self.expect(self.group in AXES, f"group {self.group!r} is not one of {AXES}")

    def run(self, ins):
        raise self.fail(f"runs through a communicator of its {self.group} group, not alone")

    def combine(self, parts: Sequence[Sequence[Any]], index: int) -> tuple[Any, ...]:
        """The results of member `index`, from the operands of every member (`parts[i]`)."""
        raise self.fail("no combine rule")


@register
@dataclass(frozen=True)
class AllReduce(Collective):
    """The sum of every member's partial value (partial sums of a split GEMM, masked
    embedding rows, per-rank expert outputs, the indexer's per-head scores)."""

    kind = "all_reduce"
    operands = ("x",)

    def infer(self, ins):
        self.infer_group()
        return (ins[0],)

    def combine(self, parts, index):
        import torch

        total = torch.stack([p[0].float() for p in parts]).sum(0)
        return (total.to(parts[0][0].dtype),)


@register
@dataclass(frozen=True)
class AllGather(Collective):
    """Every member's piece concatenated along `dim`, in index order (the lm_head's
    vocabulary pieces: [B,1,V/P] -> [B,1,V])."""

    kind = "all_gather"
    operands = ("x",)
    dim: int = -1
    parts: int = 1

    def infer(self, ins):
        self.infer_group()
        (x,) = ins
        dim = self.dim % len(x.shape)
        self.expect(isinstance(x.shape[dim], int), f"gathers along a symbolic dim of {x}")
        shape = list(x.shape)
        shape[dim] *= self.parts
        return (x.with_shape(*shape),)

    def combine(self, parts, index):
        import torch

        return (torch.cat([p[0] for p in parts], dim=self.dim),)


@register
@dataclass(frozen=True)
class ShardStart(Collective):
    """Where this rank's piece of a dim split over `group` starts: its index in the group
    times `size`, the piece's length ([1] i64; the first vocabulary row or expert id)."""

    kind = "shard_start"
    size: int = 1

    def infer(self, ins):
        self.infer_group()
        return (TensorType((1,), "i64"),)

    def combine(self, parts, index):
        import torch

        return (torch.tensor([index * self.size], dtype=torch.int64),)
