"""Prefetch of the next MoE layer's offloaded experts: once a layer's experts have run, the
next layer's router is applied to this layer's input (its gate projection and gate, the
reference semantics) and the experts it picks are copied into that layer's slot cache
ahead of use. For a hash gate the picks depend on the token ids alone, so the prediction is
exact, and the first MoE layer's, which no layer before it predicts, are prefetched at the
step's start (`first_gate`: its gate on logits of zeros, the picks do not read them); for a
score gate it is the next router on a neighbouring input, a guess (public
measurements on V4-Flash: about half the misses). A wrong guess costs link bytes, never
bits: the layer's own fetch still finds every expert it picks (`runtime/offload.py`); but it
holds the link, so a plan guesses score layers only where the host-link model says it pays
(`plan.offload["guess"]`, `v4c.link_model.guess_pays`; runtime/program.py skips them else).

On a GPU the copy runs on a side stream, forked here and joined by the next layer's fetch,
so it overlaps the compute in between (attention, the shared expert) inside the captured
step; the prediction itself runs on the step's stream, into a buffer of the store's own
(`ExpertStore.ahead`), so the side stream reads nothing the arena reuses. On the CPU it
runs in order.

Legend: T tokens, K picks a token, E experts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from v4c.ir.plan import Launch
from v4c.ir.semantics.quant import QuantWeight
from v4c.runtime.offload import ExpertStore, layer_of


# the gate alone, with its sort (passes/fuse_moe_route), or with its projection too
# (passes/fuse_gate_route: the launch is its own projection)
ROUTERS = ("moe_gate", "moe_route", "gate_route")


def next_gate(launches: list[Launch], i: int) -> tuple[int, int, str] | None:
    """(gate projection, gate, the layer of its experts) of the first MoE layer after launch
    i, when its logits come from a linear launch whose other operands, like the gate's, are
    weights or step inputs (bound before the step: nothing the step computes); else None."""
    gate = next((j for j in range(i + 1, len(launches)) if launches[j].op in ROUTERS), None)
    if gate is None:
        return None
    source = launches[gate].inputs[0].name
    proj = gate if launches[gate].op == "gate_route" else next(
        (p for p in range(gate - 1, i, -1) if launches[p].op == "linear"
         and launches[p].outputs[0].name == source), None)  # fmt: skip
    experts = next((k for k in range(gate + 1, len(launches))
                    if launches[k].op == "grouped_swiglu"), None)  # fmt: skip
    if proj is None or experts is None:
        return None
    bound = [*launches[proj].inputs[1:], *launches[gate].inputs[1:]]
    if any(ref.kind not in ("param", "input") for ref in bound):
        return None
    return proj, gate, layer_of(launches[experts].inputs[4].name)


def exact(gate: Launch) -> bool:
    """Whether a gate's picks follow from the step's inputs alone: a hash gate, which reads
    the token ids (its other operands weights)."""
    rest = gate.inputs[1:]
    return any(r.kind == "input" for r in rest) and all(r.kind in ("param", "input") for r in rest)


def first_gate(launches: list[Launch]) -> tuple[int, str] | None:
    """(gate, the layer of its experts) of the first MoE layer when its picks are known at
    the step's start (`exact`), else None."""
    experts = next((k for k, la in enumerate(launches) if la.op == "grouped_swiglu"), None)
    if experts is None:
        return None
    gate = next((j for j in range(experts - 1, -1, -1) if launches[j].op in ROUTERS), None)
    if gate is None or not exact(launches[gate]):
        return None
    return gate, layer_of(launches[experts].inputs[4].name)


def prefetcher(
    store: ExpertStore, proj, proj_rest: list, gate, gate_rest: list, x: torch.Tensor
) -> Callable[[], None]:
    """The call that predicts, from `x` (this layer's expert input), the next layer's picks
    (`proj`, `gate`: its ops, `*_rest`: their bound operands but the first) and starts
    copying them into `store` (the next layer's). Without `proj` the gate reads `x` itself:
    a gate_route (its own projection), or the first gate at the step's start."""

    def dense(operands: list) -> list:
        return [w.dequantize(x.dtype) if isinstance(w, QuantWeight) else w for w in operands]

    rest, gate_rest = dense(proj_rest), dense(gate_rest)
    stream = torch.cuda.Stream(store.device) if store.device.type == "cuda" else None

    def call() -> None:
        (first,) = proj.run([x, *rest]) if proj is not None else (x,)
        idx = gate.run([first, *gate_rest])[1]  # [.., K] expert ids (moe_route: + sort)
        store.ahead.zero_().scatter_(0, idx.flatten(), 1)
        if stream is None:
            store.prefetch()
            return
        stream.wait_stream(torch.cuda.current_stream(store.device))
        with torch.cuda.stream(stream):
            store.prefetch()
        store.pending = stream  # the store's next fetch waits for it

    return call
