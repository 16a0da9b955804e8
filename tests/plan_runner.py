"""Run a plan's bound programs on explicit step inputs, as the engine does but without its
sequence bookkeeping: what the pass and parity tests compare with the reference executor."""

from __future__ import annotations

import torch

from v4c.ir.plan import Plan
from v4c.runtime.engine import input_buffers
from v4c.runtime.program import Program


class PlanRunner:
    def __init__(self, plan: Plan, params, state, *, dtype=torch.float32, backend="torch", **kw):
        device = next(iter(state.values())).device
        inputs = input_buffers(plan, device, dtype)
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

    def run(self, step_inputs: dict[str, torch.Tensor], entry: str | None = None):
        """One step of `entry` (default: decode when T = 1, else prefill); returns copies of
        its outputs by the entry's keys."""
        batch, tokens = step_inputs["positions"].shape
        entry = entry or ("decode" if tokens == 1 else "prefill")
        step = self.programs[entry].bind(batch, tokens)
        for key, view in step.inputs.items():
            view.copy_(step_inputs[key].reshape(view.shape))
        return {key: value.clone() for key, value in step.run().items()}
