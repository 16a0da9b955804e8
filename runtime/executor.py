"""Executes a `Plan` launch by launch, with one of two backends.

Every launch names its op and constants; its operands are looked up where the plan says
they live (a parameter, a cache, a step input, or an earlier launch's result). The `torch`
backend computes each launch with the op's reference semantics; the `triton` backend with
the kernel rendered from the op's template for these constants (cached on disk and in
process), leaving dense GEMMs (`library:`) and views to torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from v4c.envs import cache_dir
from v4c.errors import V4CError
from v4c.ir.op import Op, make_op
from v4c.ir.plan import Launch, Plan, Ref
from v4c.ir.semantics.quant import QuantWeight


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples op attributes hold (they are hashed and compared)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


BACKENDS = ("torch", "triton")


class PlanExecutor:
    def __init__(
        self,
        plan: Plan,
        entry: str = "decode",
        backend: str = "torch",
        kernel_root: Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise V4CError(f"backend {backend!r} is not available; backends: {', '.join(BACKENDS)}")
        self.plan, self.backend = plan, backend
        self.kernel_root = kernel_root or cache_dir()
        self.entry = plan.entries[entry]
        self.ops: list[tuple[Launch, Op]] = [
            (launch, make_op(launch.op, {k: _tuples(v) for k, v in launch.constants.items()}))
            for launch in self.entry.launches
        ]
        if backend == "triton":
            self._check_templates()

    def _check_templates(self) -> None:
        """Every generated launch has a template that accepts its constants, checked before
        the first step rather than in the middle of one."""
        from v4c.codegen import jit

        problems = []
        for launch, op in self.ops:
            if not launch.kernel.startswith(("library:", "view:")):
                try:
                    jit.params_for(
                        launch.op, op.attrs(), [(r.shape, r.dtype) for r in launch.inputs]
                    )
                except (V4CError, ValueError) as err:
                    problems.append(f"{launch.node}: {err}")
        if problems:
            raise V4CError(
                "the triton backend cannot run this plan:\n  "
                + "\n  ".join(sorted(set(problems))[:10])
            )

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
            results = self._call(launch, op, [fetch(ref) for ref in launch.inputs])
            for ref, value in zip(launch.outputs, results):
                values[ref.name] = value
        return {key: fetch(ref) for key, ref in self.entry.outputs.items()}

    def _call(self, launch: Launch, op: Op, args: list) -> tuple:
        if self.backend == "torch" or launch.kernel.startswith(("library:", "view:")):
            return op.run(_dequantized(args))
        from v4c.codegen import jit
        from v4c.codegen.params import describe

        params = jit.params_for(launch.op, op.attrs(), [describe(a) for a in args])
        return jit.load(launch.op, params, self.kernel_root).run(*args)


def _dequantized(args: list) -> list:
    """Operands for a torch computation: weights kept quantised are dequantised to the dtype
    of the activations (the first tensor operand)."""
    if not any(isinstance(a, QuantWeight) for a in args):
        return args
    dtype = next(a.dtype for a in args if isinstance(a, torch.Tensor) and a.dtype.is_floating_point)
    return [a.dequantize(dtype) if isinstance(a, QuantWeight) else a for a in args]
