"""The `Plan`: what `lower` makes of an optimised graph, and what the runtime executes.

For each entry point (prefill, decode) an ordered list of launches. A launch is typed
(`kind`: a generated kernel, a library call for a dense GEMM (or an op's torch semantics),
a view that costs nothing, or a collective the rank's communicator runs),
names its template or call (`kernel`), the node it computes and the nodes that node fused,
its constants (op attributes), and where each operand and result lives: an arena offset, a
parameter, a cache state or a step input, with its symbolic dims (`dims`, resolved again
when a program is bound for a smaller batch or step) and its shape at the entry's limits.
`params` records each weight as a typed `PlanWeight` with its `WeightFormat` (decided at
compile time), which is what the loader produces and the kernels read. JSON in, JSON out:
a plan loads in a fresh process with nothing but this module and the op registry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from v4c.ir.weights import PlanWeight, WeightFormat

LaunchKind = Literal["kernel", "library", "view", "collective"]
LAUNCH_KINDS: tuple[LaunchKind, ...] = ("kernel", "library", "view", "collective")


@dataclass(frozen=True)
class Ref:
    """Where a tensor lives: kind is arena | param | state | input | view."""

    kind: str
    name: str  # arena: the IR value; param: the checkpoint tensor; state/input: the key
    shape: tuple[int, ...]  # at the entry's limits (env)
    dtype: str  # IR dtype (a param: its logical dtype)
    offset: int = 0  # arena byte offset (a view: the offset of what it views)
    dims: tuple[int | str, ...] = ()  # symbolic shape (B, T, S/128, ...)
    format: WeightFormat | None = None  # a param: how the program holds it


@dataclass(frozen=True)
class Launch:
    kind: LaunchKind
    kernel: str  # kernel: the template; library: the call (torch.matmul); view, collective: the op
    node: str
    op: str
    fuses: tuple[str, ...]  # the nodes of the unfused graph this launch computes
    constants: dict
    inputs: tuple[Ref, ...]
    outputs: tuple[Ref, ...]


@dataclass
class EntryPlan:
    env: dict[str, int]
    peak_bytes: int
    launches: list[Launch] = field(default_factory=list)
    outputs: dict[str, Ref] = field(default_factory=dict)


@dataclass
class Plan:
    spec: str  # the spec's name
    options: dict  # the CompileOptions it was made for
    params: dict[str, PlanWeight]  # checkpoint tensor -> how the program holds it
    states: dict[str, dict]  # cache key -> {shape (symbolic), dtype, fill}
    entries: dict[str, EntryPlan]
    model: dict = field(default_factory=dict)  # the whole ModelSpec, as JSON data
    offload: dict = field(default_factory=dict)  # `v4c.budget`: resident experts; {} all

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> Plan:
        data = json.loads(text)

        def ref(r: dict) -> Ref:
            shape, dims = tuple(r["shape"]), tuple(r["dims"])
            fmt = WeightFormat.from_json(r["format"]) if r.get("format") else None
            return Ref(r["kind"], r["name"], shape, r["dtype"], r["offset"], dims, fmt)

        def launch(d: dict) -> Launch:
            if d["kind"] not in LAUNCH_KINDS:
                raise ValueError(f"launch {d['node']}: kind {d['kind']!r} not in {LAUNCH_KINDS}")
            inputs, outputs = tuple(map(ref, d["inputs"])), tuple(map(ref, d["outputs"]))
            fuses = tuple(d["fuses"])
            return Launch(
                d["kind"], d["kernel"], d["node"], d["op"], fuses, d["constants"], inputs, outputs
            )

        entries = {}
        for name, e in data["entries"].items():
            outputs = {k: ref(r) for k, r in e["outputs"].items()}
            launches = [launch(d) for d in e["launches"]]
            entries[name] = EntryPlan(e["env"], e["peak_bytes"], launches, outputs)
        params = {name: PlanWeight.from_json(p) for name, p in data["params"].items()}
        return Plan(
            data["spec"], data["options"], params, data["states"], entries, data["model"],
            data.get("offload", {}),
        )  # fmt: skip
