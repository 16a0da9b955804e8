"""report.md of `v4c compile`: what one decode token reads, what the caches hold, what
the passes did to the op count, and what the plan launches. Deterministic: no timings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from math import prod

from v4c.ir.graph import Graph
from v4c.ir.plan import Plan
from v4c.ir.types import DTYPE_BYTES, resolve_dim
from v4c.ir.weights import PlanWeight, stored_format
from v4c.spec import ModelSpec, layer_table
from v4c.spec.parallel import DEVICE_GB
from v4c.spec.params import active_share
from v4c.spec.tensors import TensorInfo, checkpoint_tensors

MILLION = 1 << 20  # "1M tokens of context" as the model card counts it (1048576)


def stored_bytes(t: TensorInfo, spec: ModelSpec) -> int:
    """Bytes of one tensor (one expert, for stacked ones) as the checkpoint stores it."""
    return stored_format(t.storage, t.dtype, spec.quant).nbytes(t.shape, DTYPE_BYTES)


def decode_read_bytes(spec: ModelSpec) -> tuple[Counter, Counter]:
    """(bytes read per decode token by part, whole checkpoint by part), main model only."""
    read, whole = Counter(), Counter()
    for t in checkpoint_tensors(spec):
        if t.name.startswith("mtp."):
            continue
        size = stored_bytes(t, spec) * max(t.stack, 1)
        whole[t.part] += size
        read[t.part] += int(size * active_share(t, spec))
    return read, whole


def cache_bytes(graph: Graph, spec: ModelSpec) -> dict[str, tuple[int, int, int]]:
    """Per layer kind: (layers, fixed bytes per layer, bytes per token per layer)."""
    kinds = {f"L{r.index:02d}": r.attention for r in layer_table(spec) if not r.mtp}
    fixed, growing, layers = Counter(), Counter(), {}
    for node in graph.nodes():
        if node.op.source != "state" or node.op.key[:3] not in kinds:
            continue
        kind = kinds[node.op.key[:3]]
        t = node.types[0]
        at = [prod(t.resolve({"N": 1, "S": s})) * DTYPE_BYTES[t.dtype] for s in (0, MILLION)]
        fixed[kind] += at[0]
        growing[kind] += at[1] - at[0]
    for kind in set(kinds.values()):
        layers[kind] = sum(1 for k in kinds.values() if k == kind)
    return {k: (n, fixed[k] // n, growing[k] // n // MILLION) for k, n in sorted(layers.items())}


@dataclass(frozen=True)
class RankMemory:
    """What one rank holds on its device, in bytes: the weights in the plan's formats,
    the caches at the plan's limits, and the activation arena (the larger entry's peak)."""

    params: int
    caches: int
    activations: int

    @property
    def total(self) -> int:
        return self.params + self.caches + self.activations


def param_bytes(info: PlanWeight, held: int) -> int:
    """Bytes of one plan weight (all its stacked experts, scales included) in its plan
    format; `held`: the bytes of the activation dtype, which IR-bf16 weights are held in."""
    return info.format.nbytes(info.shape, {**DTYPE_BYTES, "bf16": held})


def rank_memory(plan: Plan) -> RankMemory:
    """One rank's bytes (every rank's: the plan is the same for all), IR-bf16 values held in
    the plan's activation dtype as the engine holds them."""
    held = DTYPE_BYTES[plan.options["dtype"]]

    def size(dtype: str, n: int) -> int:
        return n * (held if dtype == "bf16" else DTYPE_BYTES[dtype])

    params = sum(param_bytes(info, held) for info in plan.params.values())
    env = {"N": plan.options["max_batch"], "S": plan.options["max_seq"]}
    caches = sum(
        size(s["dtype"], prod(resolve_dim(d, env) for d in s["shape"]))
        for s in plan.states.values()
    )
    activations = max(e.peak_bytes for e in plan.entries.values())
    return RankMemory(params, caches, activations)


def fits_line(plan: Plan, device_gb: float) -> str:
    """One line: what a rank holds and whether it fits a device of `device_gb` GiB."""
    m, o = rank_memory(plan), plan.options
    tp, ep = o.get("tp", 1), o.get("ep", 1)
    verdict = "fits" if m.total <= device_gb * (1 << 30) else "does NOT fit"
    ranks = f"{tp * ep} rank{'s' * (tp * ep > 1)}"
    return (
        f"per rank (tp={tp} x ep={ep} = {ranks}): weights {_bytes(m.params)}, caches "
        f"{_bytes(m.caches)} (batch {o['max_batch']} x {o['max_seq']} tokens), activations "
        f"{_bytes(m.activations)}; total {_bytes(m.total)}: {verdict} a {device_gb:g} GiB "
        "device with every expert resident"
    )


def compute_ops(graph: Graph) -> int:
    return sum(1 for n in graph.nodes() if not n.op.source and n.op.kind != "output")


def render(
    spec: ModelSpec,
    built: Graph,
    final: Graph,
    plan: Plan,
    pipeline: list[str],
    kernels: dict,
    device_gb: float = DEVICE_GB,
) -> str:
    """`kernels`: (entry, node) -> the file in kernels/ holding that launch's kernel;
    `device_gb`: the device size the per-rank memory is checked against."""
    lines = [f"# v4c compile report: {spec.name}", ""]
    lines += [f"Options: {_kv(plan.options)}. Passes: {', '.join(pipeline)}.", ""]
    lines += _weights_section(spec) + _cache_section(final, spec)
    lines += _ops_section(built, final, plan, kernels) + _memory_section(plan)
    lines += _rank_section(plan, device_gb)
    return "\n".join(lines) + "\n"


def _weights_section(spec: ModelSpec) -> list[str]:
    read, whole = decode_read_bytes(spec)
    out = ["## Parameter bytes read per decode token", ""]
    out += ["As stored (FP8 + block scales, FP4 + per-32 scales, bf16, fp32); main model, MTP excluded;",  # noqa: E501
            f"routed experts: top-{spec.moe.top_k} of each layer; embedding and tid2eid: one row.", ""]  # fmt: skip  # noqa: E501
    out += ["| part | read per token | whole checkpoint |", "| --- | ---: | ---: |"]
    for part in sorted(whole, key=lambda p: -whole[p]):
        out.append(f"| {part} | {_bytes(read[part])} | {_bytes(whole[part])} |")
    out += [
        f"| **total** | **{_bytes(sum(read.values()))}** | **{_bytes(sum(whole.values()))}** |",
        "",
    ]
    return out


def _cache_section(graph: Graph, spec: ModelSpec) -> list[str]:
    out = ["## KV cache per sequence", ""]
    out += ["Fixed: sliding window ring buffer and compressor state. Per token: compressed entries",
            "(and indexer keys on CSA layers), growing with the context.", ""]  # fmt: skip
    out += [
        "| layer kind | layers | fixed per layer | per token per layer | all layers at 1M tokens |"
    ]
    out += ["| --- | ---: | ---: | ---: | ---: |"]
    total = 0
    for kind, (n, fixed, per_token) in cache_bytes(graph, spec).items():
        at_1m = n * (fixed + per_token * MILLION)
        total += at_1m
        out.append(f"| {kind} | {n} | {_bytes(fixed)} | {per_token} B | {_bytes(at_1m)} |")
    out += [f"| **total** | | | | **{_bytes(total)}** |", ""]
    return out


GEMMS = ("linear", "grouped_linear", "merged_linear")  # the dense GEMM family


def _ops_section(built: Graph, final: Graph, plan: Plan, kernels: dict) -> list[str]:
    decode = [launch for launch in plan.entries["decode"].launches if launch.kind != "view"]
    kinds = Counter(launch.kind for launch in decode)
    gemms = sum(1 for launch in decode if launch.op in GEMMS)
    torch_ops = kinds["library"]
    out = ["## Ops and kernels per decode step", ""]
    out += [f"- ops before fusion: {compute_ops(built)}; after the passes: {compute_ops(final)}"]
    out += [f"- kernel launches per decode step: {len(decode)} ({kinds['kernel']} generated "
            f"kernels, of them {gemms} dense GEMMs"
            + (f"; {torch_ops} torch ops" if torch_ops else "")
            + (f", {kinds['collective']} collectives" if kinds["collective"] else "")
            + ")"]  # fmt: skip
    others = [
        f"{entry} {sum(1 for launch in plan.entries[entry].launches if launch.kind != 'view')}"
        for entry in plan.entries
        if entry not in ("prefill", "decode")
    ]
    if others:  # speculative decoding's entry points (draft: the MTP block alone)
        out += [f"- launches per step of the other entry points: {', '.join(others)}"]
    out += [""]
    out += ["| kernel | launches | fuses | sources in kernels/ |", "| --- | ---: | --- | --- |"]

    def name(launch) -> str:  # a library call is shown as the call, e.g. library:torch.matmul
        if launch.kind == "library":
            return f"library:{launch.kernel}"
        return f"collective:{launch.kernel}" if launch.kind == "collective" else launch.kernel

    by_kernel = Counter(name(launch) for launch in decode)
    fused: dict[str, set[str]] = {}
    files: dict[str, set[str]] = {}
    for launch in decode:  # the unfused nodes each kernel computes, by their local name
        fused.setdefault(name(launch), set()).update(f.rsplit(".", 1)[-1] for f in launch.fuses)
        default = {"library": "torch", "collective": "torch.distributed"}.get(
            launch.kind, "no template yet (torch)"
        )
        files.setdefault(name(launch), set()).add(kernels.get(("decode", launch.node), default))
    for kernel in sorted(by_kernel):
        shown = ", ".join(sorted(files[kernel]))
        out.append(
            f"| {kernel} | {by_kernel[kernel]} | {', '.join(sorted(fused[kernel]))} | {shown} |"
        )
    return out + [""]


def _memory_section(plan: Plan) -> list[str]:
    out = ["## Memory plan (activations)", "", "| entry | env | peak |", "| --- | --- | ---: |"]
    for name, entry in plan.entries.items():
        out.append(f"| {name} | {_kv(entry.env)} | {_bytes(entry.peak_bytes)} |")
    return out + [""]


def _rank_section(plan: Plan, device_gb: float) -> list[str]:
    m = rank_memory(plan)
    out = ["## Memory per rank", ""]
    out += ["What each rank's device holds: the weights in the formats the plan reads them in",
            "(FP8/FP4 kept as stored where the kernels read them, else widened), its caches for",
            "the plan's batch and sequence limits, and the activation arena.", ""]  # fmt: skip
    out += [
        "| weights | caches | activations | total | fits, every expert resident |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]  # noqa: E501
    verdict = "yes" if m.total <= device_gb * (1 << 30) else "no"
    out.append(
        f"| {_bytes(m.params)} | {_bytes(m.caches)} | {_bytes(m.activations)} | "
        f"{_bytes(m.total)} | {verdict} ({device_gb:g} GiB) |"
    )
    collectives = Counter(
        launch.op for launch in plan.entries["decode"].launches if launch.kind == "collective"
    )
    if collectives:
        shown = ", ".join(f"{n} {op}" for op, n in sorted(collectives.items()))
        out += ["", f"Collectives per decode step: {shown}."]
    return out + [""]


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"
