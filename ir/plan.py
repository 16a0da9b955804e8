"""The `Plan`: what `lower` makes of an optimised graph, and what the runtime executes.

For each entry point (prefill, decode) an ordered list of kernel launches. A launch names
the template that will render its kernel (or the library call for a dense GEMM), the node
it computes and the nodes that node fused, its constants (op attributes and the resolved
shapes), and where each operand and result lives: an arena offset, a parameter, a cache
state or a step input. JSON in, JSON out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Ref:
    """Where a tensor lives: kind is arena | param | state | input | view."""

    kind: str
    name: str  # arena: the IR value; param: the checkpoint tensor; state/input: the key
    shape: tuple[int, ...]
    dtype: str
    offset: int = 0  # arena byte offset (a view: the offset of what it views)


@dataclass(frozen=True)
class Launch:
    kernel: str  # template name, or "library:<call>" for GEMMs left to torch/cuBLAS
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
    spec: str
    options: dict
    params: dict[str, dict]  # checkpoint tensor -> {shape, dtype, stack}
    states: dict[str, dict]  # cache key -> {shape (symbolic), dtype, fill}
    entries: dict[str, EntryPlan]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> Plan:
        data = json.loads(text)

        def ref(r: dict) -> Ref:
            return Ref(r["kind"], r["name"], tuple(r["shape"]), r["dtype"], r["offset"])

        entries = {}
        for name, e in data["entries"].items():
            launches = [
                Launch(
                    l["kernel"],
                    l["node"],
                    l["op"],
                    tuple(l["fuses"]),
                    l["constants"],
                    tuple(map(ref, l["inputs"])),
                    tuple(map(ref, l["outputs"])),
                )  # fmt: skip
                for l in e["launches"]
            ]
            outputs = {k: ref(r) for k, r in e["outputs"].items()}
            entries[name] = EntryPlan(e["env"], e["peak_bytes"], launches, outputs)
        return Plan(data["spec"], data["options"], data["params"], data["states"], entries)
