"""The reference executor: runs any graph (built or optimised) node by node with the op
registry's reference semantics. It is the oracle for the passes and for the kernels.

Values typed bf16 in the IR are held in `dtype` (fp32 for the oracle, bf16 to match the
official activations); fp32 and integer values keep their type. Caches are a dict of
tensors keyed by the graph's state keys, made by `new_state` and updated in place by the
ops that own them, so consecutive `run` calls continue the same sequences; a step's `slots`
input says which of the caches' rows (sequences) it advances. A sharded graph (one rank of a
TP x EP grid) runs its collectives through `comm` (`v4c.runtime.comm`).
"""

from __future__ import annotations

from typing import Mapping

import torch

from v4c.errors import IRError
from v4c.ir.graph import Graph, Value
from v4c.ir.types import torch_dtype
from v4c.runtime.caches import new_caches


class ReferenceExecutor:
    def __init__(
        self,
        graph: Graph,
        weights: Mapping[str, torch.Tensor],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        comm=None,
    ) -> None:
        self.graph, self.device, self.dtype, self.comm = graph, torch.device(device), dtype, comm
        self.order = graph.nodes()
        self.params: dict[str, torch.Tensor] = {}
        for node in self.order:
            if node.op.source == "param":
                name = node.op.tensor
                if name not in weights:
                    raise IRError(f"no weight for {name!r}")
                self.params[name] = weights[name].to(self.device, self.torch_dtype(node.op.dtype))

    def torch_dtype(self, ir_dtype: str) -> torch.dtype:
        return torch_dtype(ir_dtype, self.dtype)

    def new_state(self, batch: int, max_seq: int) -> dict[str, torch.Tensor]:
        """Empty caches for `batch` sequences of up to `max_seq` tokens."""
        states = {
            node.op.key: (node.types[0].shape, node.op.dtype, node.op.fill)
            for node in self.order
            if node.op.source == "state"
        }
        return new_caches(states, batch, max_seq, device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def run(
        self,
        inputs: Mapping[str, torch.Tensor],
        state: dict[str, torch.Tensor],
        outputs: tuple[str, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One step: `inputs` by input key (ids, positions, slots, ...); returns outputs by key.
        `outputs` (default: all) runs only the nodes they need, as an entry point does: the
        main model alone (logits, hidden), or the MTP block alone fed `hidden`."""
        values: dict[Value, object] = {}
        results_by_key = {}
        ids = {n.op.key: n.id for n in self.order if n.op.kind == "output"}
        runs = self.graph.needed_by([ids[k] for k in outputs]) if outputs is not None else None
        for node in self.order:
            if runs is not None and node.id not in runs:
                continue
            op = node.op
            if op.source == "input":
                if op.key not in inputs:
                    raise IRError(f"missing input {op.key!r}")
                results = (inputs[op.key].to(self.device),)
            elif op.source == "param":
                results = (self.params[op.tensor],)
            elif op.source == "state":
                results = (state[op.key],)
            else:
                args = [values[v] for v in self.graph.operands(node.id)]
                if op.collective and self.comm is None:
                    raise IRError(f"{node.id}: a collective ({op.kind}) needs a communicator")
                results = self.comm.run(op, args) if op.collective else op.run(args)
                if op.kind == "output":
                    results_by_key[op.key] = args[0]
            for index, result in enumerate(results):
                values[Value(node.id, index)] = result
        return results_by_key
