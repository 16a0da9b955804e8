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

from collections.abc import Callable, Mapping
from math import prod
from pathlib import Path

import torch

from v4c.errors import V4CError
from v4c.ir.plan import Plan
from v4c.ir.semantics.quant import QuantWeight
from v4c.ir.types import resolve_dim, torch_dtype
from v4c.ir.weights import WeightFormat
from v4c.runtime.caches import new_caches
from v4c.runtime.offload import PLANES, ExpertStore, layer_of
from v4c.runtime.program import Program, Step
from v4c.runtime.rollback import Rollback


def input_buffers(plan: Plan, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One flat zeroed buffer per step input key of `plan`, sized for its largest use (int64
    ids, positions, slots; the draft's `hidden` streams in the activation dtype)."""
    sizes: dict[str, tuple[int, str]] = {}
    for entry in plan.entries.values():
        for launch in entry.launches:
            for ref in launch.inputs:
                if ref.kind == "input":
                    n = prod(resolve_dim(d, entry.env) for d in ref.dims)
                    sizes[ref.name] = (max(sizes.get(ref.name, (0, ""))[0], n), ref.dtype)
    return {
        key: torch.zeros(n, dtype=torch_dtype(ir, dtype), device=device)
        for key, (n, ir) in sizes.items()
    }


def entry_states(plan: Plan, entry: str) -> list[str]:
    """The caches an entry's steps read and write."""
    launches = plan.entries[entry].launches
    return sorted({r.name for launch in launches for r in launch.inputs if r.kind == "state"})


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
        experts: Callable[[str], Mapping] | None = None,
    ) -> None:
        """`experts(layer)`: the routed-expert weights of an offloaded layer (`plan.offload`)
        that `weights` lacks, read when its store is made, one layer at a time, so that the
        host holds a layer's stacks once and only while they are split into its stores."""
        self.plan, self.device, self.dtype = plan, torch.device(device), dtype
        self.max_batch = plan.options["max_batch"]
        self.max_tokens = plan.options["max_tokens"]
        self.max_seq = plan.options["max_seq"]
        self.offload = self._offload(weights, experts)
        self.params = self._place(weights)
        states = {k: (s["shape"], s["dtype"], s["fill"]) for k, s in plan.states.items()}
        self.state = new_caches(
            states, self.max_batch, self.max_seq, device=self.device, dtype=dtype
        )
        self.fills = {k: s["fill"] for k, s in plan.states.items()}
        self.inputs = input_buffers(plan, self.device, dtype)
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
                offload=self.offload,
            )  # fmt: skip
            for entry in plan.entries
        }
        self.rollbacks: dict[str, Rollback] = {}  # undo what verify / chained drafts reject
        for entry in ("verify", "draft"):
            if entry in plan.entries:
                keys = entry_states(plan, entry)
                caches = {key: self.state[key] for key in keys}
                shapes = {key: plan.states[key]["shape"] for key in keys}
                self.rollbacks[entry] = Rollback(caches, shapes)
        # per sequence, the main model's last-block streams at its last positions, which a
        # draft starts from: kept by `forward(..., hidden=W)` and `keep_hidden`
        self.hidden_tail: list[torch.Tensor | None] = []
        on_cuda = self.device.type == "cuda"
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs and on_cuda
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.lengths: list[int] = []
        # told the tokens of each step `forward` runs (all rows together): a caller's
        # progress over a long prefill (the CLI's bar), never needed to compute anything
        self.on_step: Callable[[int], None] | None = None

    # -- binding --------------------------------------------------------------------------

    def _place(self, weights: Mapping) -> dict[str, torch.Tensor | QuantWeight]:
        """Every weight the plan needs on the device, in the format the plan records:
        quantised ones as stored, the others in their logical dtype."""
        missing = sorted(n for n in set(self.plan.params) - set(weights)
                         if layer_of(n) not in self.offload)  # fmt: skip
        if missing:
            raise EngineError(
                f"the weights lack {len(missing)} tensors the plan needs, e.g. {missing[0]!r}"
            )
        placed = {}
        for name, info in self.plan.params.items():
            layer = layer_of(name)
            if layer in self.offload:  # the device bank of resident and fetched experts
                placed[name] = self.offload[layer].bank[name.rsplit(".", 2)[-2]]
                continue
            weight = weights[name]
            quantised = isinstance(weight, QuantWeight)
            have = weight.format if quantised else WeightFormat.dense(info.dtype)
            if have != info.format:
                raise EngineError(
                    f"{name}: the plan reads it as {info.format}, the checkpoint gives {have} "
                    f"(compile with --weights bf16 for a checkpoint that is not FP8/FP4)"
                )
            if quantised:
                placed[name] = weight.to(self.device)
            else:
                placed[name] = weight.to(self.device, torch_dtype(info.dtype, self.dtype))
        return placed

    def _offload(self, weights: Mapping, experts: Callable | None) -> dict[str, ExpertStore]:
        """The expert stores of the layers `plan.offload` keeps partly in host memory."""
        offload = self.plan.offload
        stores = {}
        for layer, resident in offload.get("resident", {}).items():
            names = {w: f"{layer}.ffn.experts.{{e}}.{w}.weight" for w in PLANES}
            source = weights if names["w1"] in weights or experts is None else experts(layer)
            held = {  # a dense expert weight in the dtype the plan holds it in
                w: source[n]
                if isinstance(source[n], QuantWeight)
                else source[n].to(torch_dtype(self.plan.params[n].dtype, self.dtype))
                for w, n in names.items()
            }
            del source  # a layer read by `experts` is freed once its store is made
            store = ExpertStore(held, resident, offload["slots"], self.device)
            del held
            if store.expert_bytes:
                stores[layer] = store
        return stores

    def record_experts(self) -> dict[str, torch.Tensor]:
        """Count each routed expert's picks from now on (a routing profile): layer -> [E]
        counts on the device, added to by every step (steps bound again to count)."""
        picks = {}
        for name, info in self.plan.params.items():
            if layer_of(name) and name.endswith(".w1.weight"):
                picks[layer_of(name)] = torch.zeros(
                    info.shape[0], dtype=torch.long, device=self.device
                )
        for program in self.programs.values():
            program.picks = picks
            program._steps.clear()
        self.graphs.clear()
        return picks

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
        self.hidden_tail = [None] * batch

    def clear_row(self, row: int) -> None:
        """Empty cache row `row` for a new sequence, the other rows untouched (a server
        reuses the row of a finished sequence while the others go on decoding)."""
        for key, cache in self.state.items():
            cache[row].fill_(float("-inf") if self.fills[key] == "-inf" else 0.0)
        self.lengths[row] = 0
        self.hidden_tail[row] = None

    @torch.no_grad()
    def forward(self, tokens: list[list[int]], hidden: int = 0) -> torch.Tensor:
        """Append `tokens[b]` to sequence b (lists may differ in length or be empty);
        returns fp32 logits [B, V] on the engine's device at each sequence's last new
        token (NaN where none). `hidden` > 0: also keep the last `hidden` positions of the
        main model's streams in `hidden_tail` (every step then runs the prefill entry,
        which returns them)."""
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
                ids = [tokens[b][done[b] : done[b] + n] for b in rows]
                entry = "decode" if n == 1 and not hidden else "prefill"
                outputs = self.feed(entry, rows, {"ids": torch.tensor(ids)})
                out = outputs["logits"][:, -1]
                if logits is None:
                    shape = (len(tokens), out.shape[-1])
                    logits = torch.full(shape, float("nan"), device=self.device)
                logits[rows] = out.float()
                if hidden:
                    self.keep_hidden(rows, outputs["hidden"], hidden)
                for b in rows:
                    done[b] += n
                    self.lengths[b] += n
                if self.on_step is not None:
                    self.on_step(n * len(rows))
        return logits

    def feed(
        self,
        entry: str,
        rows: list[int],
        host: dict[str, torch.Tensor],
        starts: list[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One step of `entry` over cache rows `rows` (its `slots`), the positions of row b
        from starts[b] (default: where the sequence stands) on; `host` holds the other
        inputs, [b, T, ...] each. Returns the step's outputs (views of its buffers, valid
        until its next step). Sequence lengths are the caller's to advance."""
        batch, n = next(iter(host.values())).shape[:2]
        step = self.programs[entry].bind(batch, n)
        starts = [self.lengths[b] for b in rows] if starts is None else starts
        host = {
            **host,
            "positions": torch.tensor(starts)[:, None] + torch.arange(n),
            "slots": torch.tensor(rows),
        }
        for key, view in step.inputs.items():
            view.copy_(host[key].view(view.shape), non_blocking=True)
        self._run(step, batch, n, graphed=entry == "decode")
        return step.outputs

    def keep_hidden(
        self, rows: list[int], hidden: torch.Tensor, keep: int, counts: list[int] | None = None
    ) -> None:
        """Append hidden[i, :counts[i]] (default: all) to sequence rows[i]'s tail of main-model
        streams, keeping its last `keep` positions (what a draft starts from)."""
        for i, b in enumerate(rows):
            new = hidden[i, : hidden.shape[1] if counts is None else counts[i]]
            old = self.hidden_tail[b]
            tail = new if old is None else torch.cat((old, new))
            self.hidden_tail[b] = tail[-keep:].clone()

    def _run(self, step: Step, batch: int, tokens: int, graphed: bool) -> None:
        """Run a step; a CUDA decode step is captured on first use, then replayed."""
        if not (self.cuda_graphs and graphed and tokens == 1):
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
