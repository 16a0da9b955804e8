"""A plan entry bound to weights, caches and a device: the program a step runs.

Binding does every lookup once (nano-vllm's model runner, tinygrad's captured JIT): each
launch becomes a call whose operands are already tensors (a weight, a cache, a view of a
static step input, a view of the entry's arena at the offset the memory plan chose) and
whose results are written into arena views (a generated kernel or a GEMM writes there
itself, `out=`; the torch backend's reference ops allocate and are copied); each generated
kernel is rendered, validated and loaded then. View launches (`split_heads`, `take_last`)
are evaluated once at binding: a view of a static buffer is itself static, so a step never
runs them. A collective launch (a plan sharded over ranks) runs through the rank's
communicator, its result written into its arena view like any other. A step is a flat loop
over the bound calls: no lookups by name, no validation, no kernel-cache access.

One `Program` per entry owns one arena tensor sized by the memory plan (its peak at the
entry's limits) and, past the peak, the kernels' scratch (`KernelScratch`): transient bytes
as large as the most any generated kernel asks for (`scratch_bytes` of its module, at the
limits: split-K partials, flash-decoding's partials), which every such launch reuses in turn,
then a zeroed region of int32 arrival counters (`counter_words`) that only the kernels that
count use, each leaving its counters at zero for the next. Nothing is allocated per call and
a captured step keeps its pointers. `bind(B, T)` makes the
`Step` of one batch size and step length, with every dim resolved again for (B, T) at the
same offsets (sizes only shrink below the limits, so buffers that were disjoint stay
disjoint). Steps are cached: prefill runs one per
distinct step length, decode one per batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import torch

from v4c.envs import cache_dir
from v4c.errors import V4CError
from v4c.ir.op import Op, make_op
from v4c.ir.plan import Launch, Plan, Ref
from v4c.ir.semantics.invariant import RowBlocks
from v4c.ir.semantics.quant import QuantWeight
from v4c.ir.types import ir_dtype, resolve_dim, torch_dtype
from v4c.runtime.offload import layer_of, offloaded_call
from v4c.runtime.prefetch import exact, first_gate, next_gate, prefetcher
from v4c.runtime.scratch import KernelScratch

BACKENDS = ("torch", "triton")
Call = Callable[[], None]


class BindError(V4CError):
    """A plan cannot be bound: a missing weight, cache or input, a template that refuses."""


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples op attributes hold (they are hashed and compared)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def plan_op(launch: Launch) -> Op:
    return make_op(launch.op, {k: _tuples(v) for k, v in launch.constants.items()})


@dataclass
class Step:
    """The bound calls of one (entry, B, T) and the views its outputs land in."""

    calls: list[Call]
    outputs: dict[str, torch.Tensor]
    inputs: dict[str, torch.Tensor]  # the views of the static input buffers this step reads
    launches: int  # compute launches per step (views are bound away)

    def run(self) -> dict[str, torch.Tensor]:
        for call in self.calls:
            call()
        return self.outputs


class Program:
    def __init__(
        self,
        plan: Plan,
        entry: str,
        *,
        params: Mapping[str, torch.Tensor | QuantWeight],
        states: Mapping[str, torch.Tensor],
        inputs: Mapping[str, torch.Tensor],
        device: torch.device,
        dtype: torch.dtype,
        backend: str = "torch",
        kernel_root: Path | None = None,
        comm=None,
        offload: Mapping[str, Any] | None = None,
    ) -> None:
        """`inputs`: one flat static buffer per step input key, large enough for the entry's
        limits; a step views its first B*T elements. `comm`: the rank's communicator
        (`v4c.runtime.comm`), which a plan sharded over several ranks needs. `offload`:
        layer -> its `runtime.offload.ExpertStore`, for a plan with offloaded experts."""
        if backend not in BACKENDS:
            raise V4CError(f"backend {backend!r} is not available; backends: {', '.join(BACKENDS)}")
        self.plan, self.entry = plan, plan.entries[entry]
        self.params, self.states, self.inputs = params, states, inputs
        self.device, self.dtype, self.backend = device, dtype, backend
        self.kernel_root = kernel_root or cache_dir()
        held = ir_dtype(str(dtype))
        if held != plan.options["dtype"]:
            raise BindError(
                f"the plan's buffers hold activations in {plan.options['dtype']}, not {dtype}: "
                f"compile it with --dtype {held or 'bf16'}"
            )
        self.comm, self.offload = comm, offload or {}
        self.picks: dict[str, torch.Tensor] = {}  # layer -> picks per expert, when recording
        _check_comm(plan, comm)
        self.ops = [plan_op(launch) for launch in self.entry.launches]
        self.scratch = KernelScratch(self.entry.peak_bytes)
        self.kernels = self._load_kernels() if backend == "triton" else {}
        self.arena = torch.empty(self.scratch.end, dtype=torch.uint8, device=device)
        self.scratch.zero_counters(self.arena)
        self._steps: dict[tuple[int, int], Step] = {}

    def bind(self, batch: int, tokens: int) -> Step:
        key = (batch, tokens)
        if key not in self._steps:
            self._steps[key] = self._bind({**self.entry.env, "B": batch, "T": tokens})
        return self._steps[key]

    # -- binding --------------------------------------------------------------------------

    def _load_kernels(self) -> dict[int, Any]:
        """Launch index -> loaded kernel module, for every generated launch; every problem
        is reported before the first step, all at once."""
        from v4c.codegen import jit
        from v4c.codegen.emit import kernel_operands

        activations = self.plan.options["dtype"]
        kernels, problems = {}, []
        for i, (launch, op) in enumerate(zip(self.entry.launches, self.ops)):
            if launch.kind != "kernel":
                continue
            try:
                shapes = kernel_operands(launch, activations)
                kernels[i] = jit.load(
                    jit.params_for(launch.op, op.attrs(), shapes), self.kernel_root
                )
                self.scratch.ask(i, kernels[i], shapes)
            except (V4CError, ValueError) as err:
                problems.append(f"{launch.node}: {err}")
        if problems:
            shown = "\n  ".join(sorted(set(problems))[:10])
            raise BindError(f"the triton backend cannot run this plan:\n  {shown}")
        return kernels

    def _bind(self, env: dict[str, int]) -> Step:
        values: dict[str, torch.Tensor] = {}  # arena values and views, by IR value name

        def tensor(ref: Ref) -> Any:
            if ref.kind == "param":
                return self._param(ref.name)
            if ref.kind == "state":
                return self._lookup(self.states, ref, "cache")
            shape = tuple(resolve_dim(d, env) for d in ref.dims)
            if ref.kind == "input":
                flat = self._lookup(self.inputs, ref, "step input")
                return flat[: prod(shape)].view(shape)
            if ref.name not in values:  # an arena value (views are made by their launch)
                dtype = torch_dtype(ref.dtype, self.dtype)
                size = prod(shape) * dtype.itemsize
                raw = self.arena[ref.offset : ref.offset + size]
                values[ref.name] = raw.view(dtype).view(shape)
            return values[ref.name]

        calls: list[Call] = []
        step_inputs: dict[str, torch.Tensor] = {}
        for i, (launch, op) in enumerate(zip(self.entry.launches, self.ops)):
            args = [tensor(ref) for ref in launch.inputs]
            for ref, arg in zip(launch.inputs, args):
                if ref.kind == "input":
                    step_inputs[ref.name] = arg
            if launch.kind == "view":
                for ref, result in zip(launch.outputs, op.run(args)):
                    values[ref.name] = result
                continue
            outs = [None if ref.kind == "state" else tensor(ref) for ref in launch.outputs]
            _check_dense(launch, outs)
            call = self._call(i, launch, op, args, outs)
            picks = (
                self.picks.get(layer_of(launch.inputs[4].name))
                if launch.op == "grouped_swiglu"
                else None
            )
            call = call if picks is None else _counting(call, picks, args[2])
            if launch.op == "grouped_swiglu" and self.offload:
                call = self._ahead(i, call, tensor, args[0])
            if not calls and self.offload:
                call = self._at_start(call, tensor)
            calls.append(call)
        outputs = {key: tensor(ref) for key, ref in self.entry.outputs.items()}
        return Step(calls, outputs, step_inputs, len(calls))

    def _ahead(self, i: int, call: Call, tensor, x: torch.Tensor) -> Call:
        """`call` (launch i's experts on input x), then the prefetch of the next MoE layer's
        offloaded experts (runtime/prefetch.py), when it has any."""
        found = next_gate(self.entry.launches, i)
        if found is None or found[2] not in self.offload:
            return call
        p, j, layer = found
        if not (self.plan.offload.get("guess", True) or exact(self.entry.launches[j])):
            return call  # a score layer's guess does not pay on this plan (v4c.budget)
        proj, gate = (self.entry.launches[k] for k in (p, j))
        own = p == j  # a gate_route: the gate is its own projection
        ahead = prefetcher(
            self.offload[layer], None if own else self.ops[p],
            [] if own else [tensor(r) for r in proj.inputs[1:]],
            self.ops[j], [tensor(r) for r in gate.inputs[1:]], x,
        )  # fmt: skip

        def both() -> None:
            call()
            ahead()

        return both

    def _at_start(self, call: Call, tensor) -> Call:
        """The prefetch of the first MoE layer's offloaded experts when its picks are known
        at the step's start (a hash gate: runtime/prefetch.py), then `call` (the first)."""
        found = first_gate(self.entry.launches)
        if found is None or found[1] not in self.offload:
            return call
        j, layer = found
        gate = self.entry.launches[j]
        logits = torch.zeros_like(tensor(gate.inputs[0]))  # the picks do not read them
        rest = [tensor(r) for r in gate.inputs[1:]]
        ahead = prefetcher(self.offload[layer], None, [], self.ops[j], rest, logits)

        def both() -> None:
            ahead()
            call()

        return both

    def _param(self, name: str) -> Any:
        if name not in self.params:
            raise BindError(f"plan: no weight {name!r}")
        return self.params[name]

    @staticmethod
    def _lookup(table: Mapping[str, torch.Tensor], ref: Ref, what: str) -> torch.Tensor:
        if ref.name not in table:
            raise BindError(f"plan: no {what} {ref.name!r}")
        return table[ref.name]

    def _call(self, i: int, launch: Launch, op: Op, args: list, outs: list) -> Call:
        """The bound call of one compute launch: it writes its results into `outs` (None:
        the result is a cache the op updated in place)."""
        if launch.kind == "collective":
            comm = self.comm
            return _writing(lambda: comm.run(op, args), outs)
        if launch.op == "grouped_swiglu" and layer_of(launch.inputs[4].name) in self.offload:
            kernel = self.kernels[i].run if self.backend == "triton" else None
            store = self.offload[layer_of(launch.inputs[4].name)]
            return offloaded_call(store, op, args, outs[0], kernel)
        if self.backend == "triton" and launch.kind == "kernel":  # writes into the arena
            run, out = self.kernels[i].run, tuple(o for o in outs if o is not None)
            views = self.scratch.views(i, self.arena)  # past the arena's peak
            return lambda: run(*args, out=out, **views)
        if op.kind == "merged_linear":  # the reference: each part as its own linear
            calls = [self._call(i, launch, part, [args[0], w], [o])
                     for part, w, o in zip(op.parts(), args[1:], outs, strict=True)]  # fmt: skip

            def each() -> None:
                for call in calls:
                    call()

            return each
        if _blas_linear(op, args):
            return _matmul(*args, *outs)
        if any(isinstance(a, QuantWeight) for a in args):  # the reference reads dense weights
            activation = next(a.dtype for a in args if isinstance(a, torch.Tensor))
            return _writing(lambda: op.run(_dequantized(args, activation)), outs)
        return _writing(lambda: op.run(args), outs)


def _counting(call: Call, picks: torch.Tensor, offsets: torch.Tensor) -> Call:
    """`call`, then the step's picks of each expert added to `picks` (on the device)."""
    experts = picks.numel()

    def counted() -> None:
        call()
        picks.add_(offsets[1 : experts + 1] - offsets[:experts])

    return counted


def _check_comm(plan: Plan, comm) -> None:
    """A plan split over ranks runs with a communicator of its grid; one process, without."""
    tp, ep = plan.options.get("tp", 1), plan.options.get("ep", 1)
    if tp * ep == 1:
        return
    if comm is None:
        raise BindError(
            f"the plan is one rank of tp={tp} x ep={ep} = {tp * ep} ranks: run it with "
            f"`v4c run --tp {tp} --ep {ep}` or torchrun --nproc-per-node {tp * ep}"
        )
    if (comm.grid.tp, comm.grid.ep) != (tp, ep):
        raise BindError(
            f"the plan is for tp={tp} x ep={ep}, the ranks are tp={comm.grid.tp} x "
            f"ep={comm.grid.ep}"
        )


def _check_dense(launch: Launch, outs: list) -> None:
    """Kernels and GEMMs write their results as dense rows, so a result bound to a view with
    gaps (arena values never are) would be written wrongly: refused at binding."""
    for ref, out in zip(launch.outputs, outs):
        if out is not None and not out.is_contiguous():
            raise BindError(
                f"{launch.node}: result {ref.name} {tuple(out.shape)} is bound to a view that "
                f"is not contiguous (strides {out.stride()}); results must be dense arena views"
            )


def _writing(compute: Callable[[], tuple], outs: list) -> Call:
    """A call that computes, then writes each result into its arena view (the reference
    ops allocate their results)."""
    pairs = [(j, out) for j, out in enumerate(outs) if out is not None]

    def call() -> None:
        results = compute()
        for j, out in pairs:
            out.copy_(results[j])

    return call


def _blas_linear(op: Op, args: list) -> bool:
    """The torch backend's linear on a dense weight without the FP8 input rounding: the
    BLAS computes the reference's product (in the operands' dtype, fp32 accumulation)
    without an fp32 copy of the weight each step."""
    return op.kind == "linear" and not op.act_quant and not isinstance(args[1], QuantWeight)


def _matmul(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> Call:
    """y = x Wᵀ straight into `out`, in the operands' own dtype (fp32 accumulation on the
    tensor cores / in the BLAS), batch-invariant: the rows go through fixed-shape blocks
    (`ir/semantics/invariant.py`) so a token's row never depends on the step's other rows;
    an fp32 result of 16-bit operands (the lm_head) is widened from the GEMM's output, never
    computed from fp32 copies of the weight."""
    x2, o2 = x.view(-1, x.shape[-1]), out.view(-1, out.shape[-1])
    blocks = RowBlocks(x2.shape[1], o2.shape[1], x.dtype, x.device)  # bound once, reused
    return lambda: blocks(x2, w, o2)


def _dequantized(args: list, dtype: torch.dtype) -> list:
    return [a.dequantize(dtype) if isinstance(a, QuantWeight) else a for a in args]
