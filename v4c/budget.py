"""The device memory budget of a plan (`v4c compile --device-gb N`): what stays on the
device and which routed experts live in pinned host memory.

Order of fitting, in bytes of N GiB: the dense weights (everything but the routed experts,
MTP included), the caches at --max-seq x --max-batch and the activation arena (its peak
holds every kernel's scratch) come first; then, once any expert is offloaded, a device slot
cache in every layer of routed experts that its offloaded experts are copied into (as many
slots as a captured decode step picks: `slot_cache`); then as many routed experts as fit,
hottest first. Hotness is each expert's share of its layer's picks in the routing profile
(`v4c.expert_profile`), else the stated default: uniform routing, so the lowest expert ids
stay, the same count in every layer. A budget below the dense part and the slot cache is
refused with the minimum that fits.

Whether the runtime's prefetch guesses the score layers' picks (the hash layers' are exact)
is the host-link model's choice (`v4c.link_model.guess_pays`) for an H200 over PCIe 5.0
(`GUESS_FOR`): there a wrong guess holds the link longer than a right one saves. The
host-link cost is an estimate from nominal bandwidths (`LINKS`, `HBM`), stated as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import fsum
from pathlib import Path

from v4c.errors import V4CError
from v4c.expert_profile import ExpertProfile
from v4c.ir.plan import Plan
from v4c.ir.types import DTYPE_BYTES
from v4c.report import param_bytes, rank_memory
from v4c.spec.parallel import DEVICE_GB

GiB = 1 << 30
DEFAULT = "no profile: uniform routing assumed, the lowest expert ids stay resident"
# Nominal per-direction host->device bandwidths, bytes/s; achieved copies come in lower.
LINKS = {
    "PCIe 5.0 x16": (64e9, "32 GT/s x 16 lanes, 128b/130b: ~63 GB/s a direction "
                     "(PCI-SIG PCIe 5.0 base spec); H100/H200 SXM on an x86 host"),
    "NVLink-C2C": (450e9, "900 GB/s total, 450 GB/s a direction (NVIDIA GH200 Grace Hopper "
                   "Superchip datasheet); Grace-Hopper only"),
}  # fmt: skip
# Nominal HBM bandwidth, bytes/s, of the devices a budget is usually drawn for, and the
# memory a process gets on them (GiB, about: what CUDA reports free on an idle device).
HBM = {
    "H200 (141 GB HBM3e)": (4.8e12, DEVICE_GB, "NVIDIA H200 Tensor Core GPU datasheet"),
    "H100 SXM (80 GB HBM3)": (3.35e12, 78, "NVIDIA H100 Tensor Core GPU datasheet"),
}
# Whether a plan guesses its score layers' picks is decided for this link and device: an
# H100/H200 SXM on an x86 host, the common case (`v4c.link_model.guess_pays`)
GUESS_FOR = ("PCIe 5.0 x16", "H200 (141 GB HBM3e)")


class BudgetError(V4CError):
    """A device budget the plan cannot fit in."""


@dataclass(frozen=True)
class LayerFit:
    experts: int
    expert_bytes: int  # one expert's w1, w2, w3 in the plan's formats
    resident: tuple[int, ...]  # expert ids on the device, ascending
    miss: float  # expected share of the layer's picks that go to offloaded experts

    @property
    def offloaded(self) -> tuple[int, ...]:
        held = set(self.resident)
        return tuple(e for e in range(self.experts) if e not in held)


@dataclass(frozen=True)
class ExpertFit:
    budget: int
    dense: int  # weights but the routed experts, caches, activations
    slots: int  # expert slots of each layer's slot cache (0 when every expert is resident)
    slot_bytes: int
    layers: dict[str, LayerFit]  # by weight prefix: layers.3, mtp.0
    top_k: int
    source: str  # where the resident choice came from
    guess: bool = True  # prefetch guesses of score layers' picks (else hash layers' alone)

    @property
    def resident_bytes(self) -> int:
        return sum(len(f.resident) * f.expert_bytes for f in self.layers.values())

    @property
    def offloaded_bytes(self) -> int:
        return sum(len(f.offloaded) * f.expert_bytes for f in self.layers.values())

    @property
    def slot_cache_bytes(self) -> int:
        return len(self.layers) * self.slots * self.slot_bytes

    @property
    def device_bytes(self) -> int:
        return self.dense + self.slot_cache_bytes + self.resident_bytes

    def host_bytes_per_token(self, mtp: bool = False) -> float:
        """Expected bytes over the host link per decode token: each of top_k picks a layer
        makes misses with the layer's miss share (main model; MTP layers with `mtp`)."""
        return fsum(
            self.top_k * f.miss * f.expert_bytes
            for name, f in self.layers.items()
            if mtp or not name.startswith("mtp.")
        )

    def to_plan(self) -> dict:
        """What the plan records: the budget, the slot cache, each layer's resident ids."""
        if not self.slots:
            return {}
        return {
            "budget_bytes": self.budget, "slots": self.slots, "source": self.source,
            "resident": {name: list(f.resident) for name, f in self.layers.items()},
            "guess": self.guess,
        }  # fmt: skip


def routed_experts(plan: Plan) -> dict[str, tuple[int, int]]:
    """Weight prefix -> (experts, bytes of one expert) of each routed-expert group."""
    held = DTYPE_BYTES[plan.options["dtype"]]
    groups: dict[str, list[int]] = {}
    for name, info in plan.params.items():
        prefix, sep, _ = name.partition(".ffn.experts.{e}.")
        if sep:
            stack = info.shape[0]
            groups.setdefault(prefix, [stack, 0])[1] += param_bytes(info, held) // stack
    return {k: (e, b) for k, (e, b) in groups.items()}  # in the plan's (layer) order


def slot_cache(plan: Plan, top_k: int) -> tuple[int, int]:
    """(slots a layer, bytes a slot) of the slot caches, one a layer of routed experts: the
    picks of a one-token step (max_batch x top_k, at most the experts), the step a CUDA graph
    holds, so that its experts are fetched in one round with no host sync. Steps of more
    tokens (prefill, verify) run uncaptured, in rounds when they need more (runtime/offload)."""
    groups = routed_experts(plan).values()
    picks = plan.options["max_batch"] * top_k
    return min(picks, max(e for e, _ in groups)), max(b for _, b in groups)


def minimum_bytes(plan: Plan, top_k: int) -> int:
    """The least budget an offloaded plan fits in: all but the routed experts, and the slot
    caches."""
    groups = routed_experts(plan).values()
    slots, size = slot_cache(plan, top_k)
    return rank_memory(plan).total - sum(e * b for e, b in groups) + len(groups) * slots * size


def fit(
    plan: Plan, device_gb: float, top_k: int, profile: ExpertProfile | None = None
) -> ExpertFit:
    """Fit `plan` into `device_gb` GiB; `top_k`: the picks per token of each layer."""
    budget = int(device_gb * GiB)
    groups = routed_experts(plan)
    everything = rank_memory(plan).total
    dense = everything - sum(e * b for e, b in groups.values())
    source = f"the routing profile recorded with {profile.spec}" if profile else DEFAULT
    shares = {
        name: (profile.share(name, e) if profile else None) or [1 / e] * e
        for name, (e, _) in groups.items()
    }
    if everything <= budget or not groups:
        layers = {n: LayerFit(e, b, tuple(range(e)), 0.0) for n, (e, b) in groups.items()}
        return ExpertFit(budget, dense, 0, 0, layers, top_k, source)
    if plan.options.get("ep", 1) > 1:
        raise BudgetError(
            f"--device-gb {device_gb:g}: the plan needs {everything / GiB:.2f} GiB with every "
            "expert resident; offloading experts of an expert-parallel rank (--ep > 1) is not "
            "supported: use more ranks or a larger budget"
        )
    slots, slot_bytes = slot_cache(plan, top_k)
    cache = len(groups) * slots * slot_bytes
    minimum = dense + cache
    if budget < minimum:
        raise BudgetError(
            f"--device-gb {device_gb:g}: the plan needs at least {minimum / GiB:.2f} GiB "
            f"(dense weights, caches and activations {dense / GiB:.2f} GiB, slot caches of "
            f"{slots} experts in {len(groups)} layers {cache / GiB:.2f} GiB); pass --device-gb "
            f"{_ceil_gib(minimum)} or more, or lower --max-seq/--max-batch"
        )
    order = sorted(
        ((name, e) for name, (n, _) in groups.items() for e in range(n)),
        key=lambda k: (-shares[k[0]][k[1]], k[1], list(groups).index(k[0])),
    )
    room, chosen = budget - minimum, {name: [] for name in groups}
    for name, e in order:  # hottest first; an expert that does not fit is skipped
        size = groups[name][1]
        if size <= room:
            chosen[name].append(e)
            room -= size
    layers = {}
    for name, (n, size) in groups.items():
        resident = tuple(sorted(chosen[name]))
        miss = fsum(shares[name][e] for e in range(n) if e not in set(resident))
        layers[name] = LayerFit(n, size, resident, miss)
    from v4c.link_model import guess_pays  # the runtime's prefetch: not needed before here

    link, device = GUESS_FOR
    miss = {name: f.miss for name, f in layers.items()}
    guess = guess_pays(plan, miss, top_k, slot_bytes, HBM[device][0], LINKS[link][0])
    return ExpertFit(budget, dense, slots, slot_bytes, layers, top_k, source, guess)


def apply(plan: Plan, device_gb: float, top_k: int, profile: Path | None = None) -> ExpertFit:
    """Fit `plan` into `device_gb` GiB (resident experts from the routing profile at
    `profile`, else the default) and record the offload in it (`plan.offload`)."""
    chosen = ExpertProfile.load(profile) if profile is not None else None
    budget = fit(plan, device_gb, top_k, chosen)
    plan.offload = budget.to_plan()
    return budget


def offload_line(offload: dict) -> str:
    """What a plan's offload keeps where, in one line (empty: nothing offloaded)."""
    if not offload:
        return ""
    kept = sum(map(len, offload["resident"].values()))
    return (
        f"offload: {kept} routed experts resident, the rest in pinned host memory, a slot "
        f"cache of {offload['slots']} experts a layer"
    )


def _ceil_gib(n: int) -> str:
    return f"{-(-n * 100 // GiB) / 100:g}"
