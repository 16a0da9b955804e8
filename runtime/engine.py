"""The engine: sequences of token ids in, next-token logits out.

It owns the caches (sized from the plan: sliding window, compressor state, compressed KV,
indexer keys, per sequence), splits each sequence's new tokens into steps of at most the
plan's `max_tokens`, runs rows that advance by the same number of tokens in one step (so a
batch of sequences at different lengths decodes together), and returns the logits at each
sequence's last new token. Prefill may follow earlier tokens: every step starts where the
sequence stands.
"""

from __future__ import annotations

from typing import Mapping

import torch

from v4c.errors import V4CError
from v4c.ir.plan import Plan
from v4c.ir.semantics.quant import QuantWeight
from v4c.runtime.caches import new_caches, torch_dtype
from v4c.runtime.executor import PlanExecutor


class EngineError(V4CError):
    """A request the engine cannot serve (too long, too many sequences, missing weights)."""


class Engine:
    def __init__(
        self,
        plan: Plan,
        weights: Mapping[str, torch.Tensor],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        backend: str = "torch",
    ) -> None:
        self.plan, self.device, self.dtype = plan, torch.device(device), dtype
        self.executor = PlanExecutor(plan, "prefill", backend)
        self.max_batch = plan.options["max_batch"]
        self.max_tokens = plan.options["max_tokens"]
        self.max_seq = plan.options["max_seq"]
        missing = sorted(set(plan.params) - set(weights))
        if missing:
            raise EngineError(
                f"the weights lack {len(missing)} tensors the plan needs, e.g. {missing[0]!r}"
            )
        self.params = {
            name: self._place(weights[name], info["dtype"]) for name, info in plan.params.items()
        }
        self.state: dict[str, torch.Tensor] = {}
        self.lengths: list[int] = []

    def _place(self, weight, ir_dtype: str):
        """A weight on the engine's device: a tensor in the engine's dtype, or a QuantWeight
        kept in its stored format (the Triton kernels dequantise it on the fly)."""
        if isinstance(weight, QuantWeight):
            return weight.to(self.device)
        return weight.to(self.device, torch_dtype(ir_dtype, self.dtype))

    def reset(self, batch: int) -> None:
        """Fresh caches for `batch` empty sequences."""
        if not 1 <= batch <= self.max_batch:
            raise EngineError(
                f"batch {batch} is outside 1..{self.max_batch} (compile with --max-batch)"
            )
        states = {
            key: (info["shape"], info["dtype"], info["fill"])
            for key, info in self.plan.states.items()
        }
        self.state = new_caches(states, batch, self.max_seq, device=self.device, dtype=self.dtype)
        self.lengths = [0] * batch

    @torch.no_grad()
    def forward(self, tokens: list[list[int]]) -> torch.Tensor:
        """Append `tokens[b]` to sequence b (lists may differ in length or be empty);
        returns fp32 logits [B, V] at each sequence's last new token (NaN where none)."""
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
        logits: torch.Tensor | None = None
        done = [0] * len(tokens)
        while any(done[b] < len(ids) for b, ids in enumerate(tokens)):
            chunks: dict[int, list[int]] = {}  # step length -> rows advancing by it
            for b, ids in enumerate(tokens):
                n = min(len(ids) - done[b], self.max_tokens)
                if n:
                    chunks.setdefault(n, []).append(b)
            for n, rows in sorted(chunks.items()):
                ids = torch.tensor([tokens[b][done[b] : done[b] + n] for b in rows])
                out = self._step(rows, ids)
                if logits is None:
                    logits = torch.full((len(tokens), out.shape[-1]), float("nan"))
                logits[rows] = out.float().cpu()
                for b in rows:
                    done[b] += n
        if logits is None:
            raise EngineError("forward() needs at least one token")
        return logits

    def _step(self, rows: list[int], ids: torch.Tensor) -> torch.Tensor:
        """Advance `rows` by ids.shape[1] tokens; returns their logits [b, V] at the last one."""
        start = torch.tensor([self.lengths[b] for b in rows])
        positions = start[:, None] + torch.arange(ids.shape[1])
        inputs = {
            "ids": ids.to(self.device),
            "positions": positions.to(self.device),
            "slots": torch.tensor(rows).to(self.device),  # the step reads and writes these rows
        }
        logits = self.executor.run(inputs, self.params, self.state)["logits"]
        for b in rows:
            self.lengths[b] += ids.shape[1]
        return logits[:, -1]
