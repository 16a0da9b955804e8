"""The host-link model of an offloaded decode step (`v4c compile --device-gb N`): what the
link costs a batch-1 decode token once the prefetch overlaps part of it. An estimate.

What the runtime does (runtime/offload.py, runtime/prefetch.py, runtime/program.py), and so
what is modelled, per MoE layer of the main model:

- the prefetch: once the previous MoE layer's experts have run, this layer's router is
  applied to that layer's input on the step's stream (extra compute: this layer's gate
  projection and gate run once more, `LayerLink.predict`) and the offloaded experts it picks
  are copied on a side stream while the step computes up to this layer's experts
  (`LayerLink.window`: the launches in between). The first MoE layer, when its gate is a
  hash gate, is prefetched at the step's start (its window: every launch before its
  experts); a layer nothing prefetches copies every miss at its fetch.
- the fetch, before the layer's experts: it waits for the prefetch (one link, copies in
  order), then copies, on the step's stream, the misses the prefetch did not predict.

So a prefetched layer with k offloaded picks stalls the step by max(0, k c - W) + (1 - p) k c
(c: one expert's link time, W: the window, p: the share of its misses the prediction holds:
1 for a hash gate, whose picks follow from the token ids, PREDICTED for a score gate); one
without a prefetch by k c. k is binomial (top_k picks, each offloaded with the layer's miss
share) and the stall is its expectation over k (the stall is not linear in k). A wrong guess
copies an expert no pick needs: as many guessed as picked, so a score layer's prefetch moves
k experts and its fetch (1 - p) k more, all counted in the link bytes.

Not modelled (the estimate is a bound in both directions): slot-cache reuse from one token to
the next (a miss still cached from the last token is a hit; not credited); the copy kernel's
share of the SMs while it overlaps (it moves ~64 GB/s over PCIe, ~1 % of HBM bandwidth); the
link's latency and the copies' launches; batch > 1 (picks of several rows overlap).

The skew scenario (`skew_miss`): with no routing profile of V4-Flash at hand (no real
weights here) the default resident choice assumes uniform routing, the worst case. Issue 26
quotes public measurements on V4-Flash: 240-248 of 256 experts live per layer over a session,
and a frequency-pinned cache hitting 40-52 % of picks at 500-900 slots of 11,008 (43 layers x
256). A Zipf law over the 248 live experts (the more live experts: the more misses) with
exponent 0.88 reproduces both points (a layer's 12 hottest: 41 %, its 21 hottest: 51 %;
tests/test_link_model.py); the scenario is that law with the resident experts the hottest.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb, fsum

from v4c.codegen.cost import launch_bytes
from v4c.ir.plan import Plan
from v4c.runtime.offload import layer_of
from v4c.runtime.prefetch import exact, first_gate, next_gate

# share of a score layer's misses the next router on this layer's input predicts (issue 26's
# public measurement on V4-Flash: "about half of the misses")
PREDICTED = 0.5
SKEW_EXPONENT, SKEW_LIVE = 0.88, 248  # the Zipf fit of the skew scenario, of 256 experts


@dataclass(frozen=True)
class LayerLink:
    miss: float  # share of the layer's picks that go to offloaded experts
    predicted: float | None  # share of its misses the prefetch holds; None: no prefetch
    window: float  # seconds of the step the prefetch's copy overlaps
    predict: float = 0.0  # seconds the prediction adds to the step


@dataclass(frozen=True)
class LinkEstimate:
    compute: float  # seconds of the step's kernels, the predictions included
    stall: float  # expected seconds the fetches wait for the link
    serial: float  # the link time with no overlap: every miss copied at its fetch
    link_bytes: float  # expected bytes over the link a token, wrong guesses included
    predictions: float = 0.0  # seconds of `compute` that are the predictions

    @property
    def step(self) -> float:
        return self.compute + self.stall

    @property
    def tokens_per_s(self) -> float:
        return 1 / self.step

    @property
    def serial_tokens_per_s(self) -> float:
        """With no overlap credited and no prediction run: the kernels, then every miss."""
        return 1 / (self.compute - self.predictions + self.serial)


def binomial(n: int, p: float) -> list[float]:
    """P(k) of k successes in n draws of probability p, k = 0 .. n."""
    return [comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]


def layer_stall(layer: LayerLink, picks: int, copy: float) -> float:
    """Expected seconds the layer's fetch waits: `picks` a token, `copy` seconds an expert."""
    odds = binomial(picks, layer.miss)
    if layer.predicted is None:
        return fsum(p * k * copy for k, p in enumerate(odds))
    return fsum(
        p * (max(0.0, k * copy - layer.window) + (1 - layer.predicted) * k * copy)
        for k, p in enumerate(odds)
    )


def layer_copies(layer: LayerLink, picks: int) -> float:
    """Expected experts the layer moves over the link a token (prefetch and fetch)."""
    extra = 0.0 if layer.predicted is None else 1 - layer.predicted
    return picks * layer.miss * (1 + extra)


def estimate(
    compute: float, layers: list[LayerLink], picks: int, expert_bytes: float, link: float
) -> LinkEstimate:
    """The offloaded step: `compute` seconds of kernels (the all-resident step), `layers` the
    main model's MoE layers, `picks` (top_k) a token, `expert_bytes` an expert, `link` bytes/s."""
    copy = expert_bytes / link
    predictions = fsum(layer.predict for layer in layers)
    return LinkEstimate(
        compute=compute + predictions,
        stall=fsum(layer_stall(layer, picks, copy) for layer in layers),
        serial=fsum(picks * layer.miss * copy for layer in layers),
        link_bytes=fsum(layer_copies(layer, picks) for layer in layers) * expert_bytes,
        predictions=predictions,
    )


def zipf_shares(experts: int, exponent: float = SKEW_EXPONENT, live: int = SKEW_LIVE):
    """Each expert's share of picks, hottest first: a Zipf law over the live experts (scaled
    from 256 to `experts`), none for the rest."""
    alive = max(1, round(live * experts / 256))
    weights = [(r + 1) ** -exponent for r in range(alive)]
    total = fsum(weights)
    return [w / total for w in weights] + [0.0] * (experts - alive)


def skew_miss(resident: int, experts: int) -> float:
    """The skew scenario's miss share of a layer whose `resident` hottest experts stay."""
    return fsum(zipf_shares(experts)[resident:])


def layer_links(
    plan: Plan, seconds: dict[str, float], miss: dict[str, float], guess: bool = True
) -> list[LayerLink]:
    """The decode step's MoE layers with offloaded experts (`miss`: layer -> miss share), in
    order, their prefetch as runtime/program.py binds it (`guess` False: the hash layers'
    alone, no score layer guessed); `seconds`: each launch node's time in the all-resident
    step (the roofline or the kernel lens)."""
    launches = plan.entries["decode"].launches
    kinds: dict[str, tuple[float, list[int]]] = {}  # layer -> (p, the prediction's launches)
    first = first_gate(launches)
    if first is not None:
        kinds[first[1]] = (1.0, [first[0]])  # at the step's start: the gate alone
    for i, launch in enumerate(launches):
        found = next_gate(launches, i) if launch.op == "grouped_swiglu" else None
        if found is not None:
            proj, gate, layer = found
            if guess or exact(launches[gate]):
                kinds[layer] = (1.0 if exact(launches[gate]) else PREDICTED, [proj, gate])
    out, start = [], 0
    for i, launch in enumerate(launches):
        if launch.op != "grouped_swiglu":
            continue
        layer = layer_of(launch.inputs[4].name)
        window = fsum(seconds.get(launches[k].node, 0.0) for k in range(start, i))
        start = i + 1
        if layer not in miss:
            continue
        if layer not in kinds:
            out.append(LayerLink(miss[layer], None, 0.0))
            continue
        p, ahead = kinds[layer]
        predict = fsum(seconds.get(launches[k].node, 0.0) for k in ahead)
        out.append(LayerLink(miss[layer], p, window, predict))
    return out


def roofline_seconds(plan: Plan, hbm: float) -> dict[str, float]:
    """Each decode launch node's seconds at batch 1 at the HBM roofline (its bytes)."""
    entry = plan.entries["decode"]
    env = {**entry.env, "B": 1, "T": 1}
    return {la.node: launch_bytes(la, plan, env) / hbm for la in entry.launches
            if la.kind != "view"}  # fmt: skip


def guess_pays(
    plan: Plan, miss: dict[str, float], picks: int, expert_bytes: float, hbm: float, link: float
) -> bool:
    """Whether guessing the score layers' picks (and copying the guesses) makes the step at
    the HBM roofline faster than prefetching the hash layers' alone, over `link` bytes/s."""
    seconds = roofline_seconds(plan, hbm)
    compute = fsum(seconds.values())
    steps = [
        estimate(compute, layer_links(plan, seconds, miss, guess), picks, expert_bytes, link).step
        for guess in (True, False)
    ]
    return steps[0] < steps[1]
