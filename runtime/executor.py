"""The torch backend: executes a `Plan` launch by launch with each op's reference semantics.

This is what "the runtime executes the compiled plan" means for the torch backend: every
launch names its op and constants, its operands are looked up where the plan says they
live (a parameter, a cache, a step input, or an earlier launch's result), and the op from
the registry computes it.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from v4c.errors import V4CError
from v4c.ir.op import Op, make_op
from v4c.ir.plan import Launch, Plan, Ref


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples op attributes hold (they are hashed and compared)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class PlanExecutor:
    def __init__(self, plan: Plan, entry: str = "decode") -> None:
        self.plan = plan
        self.entry = plan.entries[entry]
        self.ops: list[tuple[Launch, Op]] = [
            (launch, make_op(launch.op, {k: _tuples(v) for k, v in launch.constants.items()}))
            for launch in self.entry.launches
        ]

    @torch.no_grad()
    def run(
        self,
        inputs: Mapping[str, torch.Tensor],
        params: Mapping[str, torch.Tensor],
        state: Mapping[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """One step; `state` is updated in place. Returns the entry's outputs by key."""
        values: dict[str, torch.Tensor] = {}
        sources = {"param": params, "state": state, "input": inputs}

        def fetch(ref: Ref) -> torch.Tensor:
            table = sources.get(ref.kind, values)
            if ref.name not in table:
                raise V4CError(f"plan: no {ref.kind} {ref.name!r}")
            return table[ref.name]

        for launch, op in self.ops:
            results = op.run([fetch(ref) for ref in launch.inputs])
            for ref, value in zip(launch.outputs, results):
                values[ref.name] = value
        return {key: fetch(ref) for key, ref in self.entry.outputs.items()}
