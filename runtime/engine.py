"""The engine: sequences of token ids in, next-token logits out.

It binds the plan once: the weights in the formats the plan records, the caches (sliding
window, compressor state, compressed KV, indexer keys) for `max_batch` sequences, one flat
static buffer per step input, and one `Program` per entry point. A step of T = 1 tokens runs
the decode entry, a longer one the prefill entry; both run from static buffers. On CUDA the
decode step of each batch size is captured in a CUDA graph on first use and replayed. The
sizes are exact rather than padded to power-of-two buckets: a padded row would need a
cache row of its own to write into, as large as a real sequence's.

It splits each sequence's new tokens into steps of at most the plan's `max_tokens`, runs
rows that advance by the same number of tokens in one step (so a batch of sequences at
different lengths decodes together), and returns the logits at each sequence's last new
token. Prefill may follow earlier tokens: every step starts where the sequence stands.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import prod
from pathlib import Path

import torch

from v4c.errors import V4CError
from v4c.ir.plan import Plan
from v4c.ir.semantics.quant import QuantWeight
from v4c.ir.types import resolve_dim, torch_dtype
from v4c.runtime.caches import new_caches
from v4c.runtime.program import Program, Step


class EngineError(V4CError):
    """A request the engine cannot serve (too long, too many sequences, missing weights)."""


class Engine:
    def __init__(
        self,
        plan: Plan,
        weights: Mapping[str, torch.Tensor | QuantWeight],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        backend: str = "torch",
        cuda_graphs: bool | None = None,
        kernel_root: Path | None = None,
        comm=None,  # the rank's communicator, for a plan sharded over ranks (runtime.comm)
    ) -> None:
        self.plan, self.device, self.dtype = plan, torch.device(device), dtype
        self.max_batch = plan.options["max_batch"]
        self.max_tokens = plan.options["max_tokens"]
        self.max_seq = plan.options["max_seq"]
        self.params = self._place(weights)
        states = {k: (s["shape"], s["dtype"], s["fill"]) for k, s in plan.states.items()}
        self.state = new_caches(
            states, self.max_batch, self.max_seq, device=self.device, dtype=dtype
        )
        self.fills = {k: s["fill"] for k, s in plan.states.items()}
        self.inputs = self._input_buffers()
        self.programs = {
            entry: Program(
                plan,
                entry,
                params=self.params,
                states=self.state,
                inputs=self.inputs,
                device=self.device,
                dtype=dtype,
                backend=backend,
                kernel_root=kernel_root,
                comm=comm,
            )  # fmt: skip
            for entry in plan.entries
        }
        on_cuda = self.device.type == "cuda"
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs and on_cuda
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.lengths: list[int] = []

    # -- binding --------------------------------------------------------------------------

    def _place(self, weights: Mapping) -> dict[str, torch.Tensor | QuantWeight]:
        """Every weight the plan needs on the device, in the format the plan records:
        quantised ones as stored, the others in their logical dtype."""
        missing = sorted(set(self.plan.params) - set(weights))
        if missing:
            raise EngineError(
                f"the weights lack {len(missing)} tensors the plan needs, e.g. {missing[0]!r}"
            )
        placed = {}
        for name, info in self.plan.params.items():
            weight, want = weights[name], info["format"]
            have = weight.format if isinstance(weight, QuantWeight) else info["dtype"]
            if have != want:
                raise EngineError(
                    f"{name}: the plan reads it as {want}, the checkpoint gives {have} "
                    f"(compile with --weights bf16 for a checkpoint that is not FP8/FP4)"
                )
            if isinstance(weight, QuantWeight):
                placed[name] = weight.to(self.device)
            else:
                placed[name] = weight.to(self.device, torch_dtype(info["dtype"], self.dtype))
        return placed

    def _input_buffers(self) -> dict[str, torch.Tensor]:
        """One flat int64 buffer per step input, as large as any entry needs at its limits."""
        sizes: dict[str, int] = {}
        for entry in self.plan.entries.values():
            for launch in entry.launches:
                for ref in launch.inputs:
                    if ref.kind == "input":
                        n = prod(resolve_dim(d, entry.env) for d in ref.dims)
                        sizes[ref.name] = max(sizes.get(ref.name, 0), n)
        return {k: torch.zeros(n, dtype=torch.int64, device=self.device) for k, n in sizes.items()}

    # -- sequences ------------------------------------------------------------------------

    def reset(self, batch: int) -> None:
        """Empty caches for `batch` sequences (refilled in place: programs are bound to them)."""
        if not 1 <= batch <= self.max_batch:
            raise EngineError(
                f"batch {batch} is outside 1..{self.max_batch} (compile with --max-batch)"
            )
        for key, cache in self.state.items():
            cache.fill_(float("-inf") if self.fills[key] == "-inf" else 0.0)
        self.lengths = [0] * batch

    @torch.no_grad()
    def forward(self, tokens: list[list[int]]) -> torch.Tensor:
        """Append `tokens[b]` to sequence b (lists may differ in length or be empty);
        returns fp32 logits [B, V] on the engine's device at each sequence's last new
        token (NaN where none)."""
        if len(tokens) != len(self.lengths):
            raise EngineError(
                f"{len(tokens)} token lists for {len(self.lengths)} sequences (call reset)"
            )
        for b, ids in enumerate(tokens):
            if self.lengths[b] + len(ids) > self.max_seq:
                total = self.lengths[b] + len(ids)
                raise EngineError(
                    f"sequence {b} would hold {total} tokens > max_seq {self.max_seq}"
                )
        if not any(tokens):
            raise EngineError("forward() needs at least one token")
        logits: torch.Tensor | None = None
        done = [0] * len(tokens)
        while any(done[b] < len(ids) for b, ids in enumerate(tokens)):
            chunks: dict[int, list[int]] = {}  # step length -> rows advancing by it
            for b, ids in enumerate(tokens):
                n = min(len(ids) - done[b], self.max_tokens)
                if n:
                    chunks.setdefault(n, []).append(b)
            for n, rows in sorted(chunks.items()):
                out = self._step(rows, [tokens[b][done[b] : done[b] + n] for b in rows])
                if logits is None:
                    shape = (len(tokens), out.shape[-1])
                    logits = torch.full(shape, float("nan"), device=self.device)
                logits[rows] = out.float()
                for b in rows:
                    done[b] += n
        return logits

    def _step(self, rows: list[int], ids: list[list[int]]) -> torch.Tensor:
        """Advance `rows` by len(ids[0]) tokens; returns their logits [b, V] at the last one
        (a view of the step's output buffer, valid until the next step). The step reads and
        writes the caches of `rows` in place: they are its `slots`."""
        batch, n = len(rows), len(ids[0])
        step = self.programs["decode" if n == 1 else "prefill"].bind(batch, n)
        host = {
            "ids": torch.tensor(ids),
            "positions": torch.tensor([self.lengths[b] for b in rows])[:, None] + torch.arange(n),
            "slots": torch.tensor(rows),
        }
        for key, view in step.inputs.items():
            view.copy_(host[key].view(view.shape), non_blocking=True)
        self._run(step, batch, n)
        for b in rows:
            self.lengths[b] += n
        return step.outputs["logits"][:, -1]

    def _run(self, step: Step, batch: int, tokens: int) -> None:
        """Run a step; a CUDA decode step is captured on first use, then replayed."""
        if not (self.cuda_graphs and tokens == 1):
            step.run()
            return
        if batch not in self.graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # the real first step; it also compiles the kernels
                step.run()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # recorded, not executed
                step.run()
            self.graphs[batch] = graph
            return
        self.graphs[batch].replay()
