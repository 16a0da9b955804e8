"""Run a plan's bound programs on explicit step inputs, as the engine does but without its
sequence bookkeeping: what the pass and parity tests compare with the reference executor."""

from __future__ import annotations

import torch

from v4c.ir.plan import Plan
from v4c.runtime.program import Program


class PlanRunner:
    def __init__(self, plan: Plan, params, state, *, dtype=torch.float32, backend="torch", **kw):
        device = next(iter(state.values())).device
        size = max(e.env["B"] * e.env["T"] for e in plan.entries.values())
        inputs = {k: torch.zeros(size, dtype=torch.int64, device=device) for k in INPUTS}
        self.programs = {
            entry: Program(
                plan,
                entry,
                params=params,
                states=state,
                inputs=inputs,
                device=device,
                dtype=dtype,
                backend=backend,
                **kw,
            )  # fmt: skip
            for entry in plan.entries
        }

    def run(self, step_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step (decode when T = 1); returns copies of its outputs."""
        batch, tokens = step_inputs["ids"].shape
        step = self.programs["decode" if tokens == 1 else "prefill"].bind(batch, tokens)
        for key, view in step.inputs.items():
            view.copy_(step_inputs[key].reshape(view.shape))
        return {key: value.clone() for key, value in step.run().items()}


INPUTS = ("ids", "positions", "mtp_ids", "slots")
