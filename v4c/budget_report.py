"""report.md's section on the device budget: what fits, what is offloaded, the host-link
bytes per decode token the profile predicts and what they are estimated to cost.

The cost model, an estimate (`v4c.link_model`): the all-resident decode step at batch 1 at
the HBM roofline (each launch's bytes at nominal peak), plus the stalls the host link causes
once the prefetch overlaps what it can (a hash layer's picks exactly, a score layer's about
half; the rest of a layer's misses copied at its fetch); beside it, the serial bound (every
miss copied at its fetch, no overlap). Nominal peak bandwidths: the estimate is not a
measurement. With `--target`, `lens_section` does the same against the kernel lens's step.
"""

from __future__ import annotations

import json
from pathlib import Path

from v4c.budget import DEFAULT, GUESS_FOR, HBM, LINKS, GiB, ExpertFit
from v4c.ir.plan import Plan
from v4c.link_model import (
    PREDICTED,
    LinkEstimate,
    estimate,
    layer_links,
    roofline_seconds,
    skew_miss,
)
from v4c.report import _bytes

SKEW = "skew scenario (Zipf fit to public V4-Flash measurements, v4c.link_model)"


def scenarios(fit: ExpertFit) -> dict[str, dict[str, float]]:
    """Routing -> each offloaded layer's miss share: the fit's (its profile's, else uniform)
    and, without a profile, the labelled skew scenario beside it."""
    main = {n: f.miss for n, f in fit.layers.items() if f.offloaded}
    default = fit.source == DEFAULT
    out = {"uniform (no profile: the worst case)" if default else "the profile's": main}
    if default:
        out[SKEW] = {n: skew_miss(len(fit.layers[n].resident), fit.layers[n].experts)
                     for n in main}  # fmt: skip
    return out


def link_estimates(
    fit: ExpertFit, plan: Plan, seconds: dict[str, float], link: float
) -> dict[str, tuple[LinkEstimate, LinkEstimate]]:
    """Routing scenario -> the offloaded decode step against `seconds` a launch node: with
    the prefetch as built (hash layers exact, score layers guessed), and hash layers alone."""
    compute = sum(seconds.values())
    return {
        name: tuple(
            estimate(
                compute, layer_links(plan, seconds, miss, guess), fit.top_k, fit.slot_bytes, link
            )  # fmt: skip
            for guess in (True, False)
        )
        for name, miss in scenarios(fit).items()
    }


def estimate_rows(label: str, found: dict, link: str) -> list[str]:
    return [
        f"| {label} | {link} | {routing} | {e.serial * 1e3:.2f} ms | {_mib(e.link_bytes)}, "
        f"{e.stall * 1e3:.2f} ms | {_mib(h.link_bytes)}, {h.stall * 1e3:.2f} ms | "
        f"{e.serial_tokens_per_s:.0f} | {e.tokens_per_s:.0f} | {h.tokens_per_s:.0f} |"
        for routing, (e, h) in found.items()
    ]


HEADER = [
    "| step from | link | routing | link time, serial | link bytes, stall: prefetch guessing "
    "| the same, hash layers only | est. tokens/s: serial | guessing | hash only |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
]
WHAT = (
    "Serial: every miss copied at its layer's fetch, nothing overlapped. Guessing: the "
    "runtime's prefetch with hash layers exact (the first one at the step's start) and score "
    f"layers guessed from the layer before ({PREDICTED:.0%} of their misses right), the "
    "prediction's launches added to the step; a wrong guess holds the link before the "
    "fetch's own copies. Hash only: the runtime's prefetch with the score layers not "
    "guessed. Stalls are expectations over the binomial number of offloaded picks "
    "(`v4c.link_model`)."
)


def budget_section(fit: ExpertFit, plan: Plan) -> list[str]:
    out = ["## Device budget and expert offload", ""]
    slots = fit.slot_cache_bytes
    out += [
        "| budget | dense weights, caches, activations | slot cache | resident experts | "
        "on the device | offloaded to pinned host memory |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {_gib(fit.budget)} | {_gib(fit.dense)} | {_gib(slots)} ({fit.slots} slots a layer) | "
        f"{_gib(fit.resident_bytes)} | {_gib(fit.device_bytes)} | {_gib(fit.offloaded_bytes)} |",
        "",
    ]
    if not fit.slots:
        return out + ["Every routed expert fits on the device: nothing is offloaded.", ""]
    out += [f"Resident choice: {fit.source}. Per layer (experts resident / all, expected share "
            "of picks read from host memory):", ""]  # fmt: skip
    out += ["| layer | resident | offloaded ids | miss share |", "| --- | ---: | --- | ---: |"]
    for name, f in fit.layers.items():
        off = f.offloaded
        ids = ", ".join(map(str, off[:8])) + (f", ... ({len(off)})" if len(off) > 8 else "")
        out.append(f"| {name} | {len(f.resident)}/{f.experts} | {ids} | {f.miss:.3f} |")
    host = fit.host_bytes_per_token()
    out += ["", f"Host-link bytes per decode token at its fetches (main model, top-{fit.top_k} "
            f"picks a layer x miss share x {_mib(fit.slot_bytes)} an expert): "
            f"**{_mib(host)}**; a score layer's wrong guesses add to it (below).", ""]  # fmt: skip
    out += ["Estimated batch-1 decode (an estimate: nominal bandwidths; the step at the HBM "
            "roofline; prefetch and stalls as `v4c.link_model` states them):", ""]  # fmt: skip
    out += [WHAT, "", *HEADER]
    for device, (hbm, memory, _) in HBM.items():
        if fit.budget > memory * GiB:  # this budget does not fit that device
            continue
        seconds = roofline_seconds(plan, hbm)
        for link, (bw, _) in LINKS.items():
            out += estimate_rows(f"{device} roofline", link_estimates(fit, plan, seconds, bw),
                                 link)  # fmt: skip
    out += ["", policy_line(fit)]
    cited = {k: (v[0], v[-1]) for k, v in {**HBM, **LINKS}.items()}
    out += ["", "Devices whose memory (about 139 GiB an H200, 78 GiB an H100) holds the budget. "
            "Bandwidths: " + "; ".join(f"{k} {v / 1e9:g} GB/s ({why})"
            for k, (v, why) in cited.items()) + ".", ""]  # fmt: skip
    return out


def policy_line(fit: ExpertFit) -> str:
    link, device = GUESS_FOR
    chosen = "guessing the score layers" if fit.guess else "hash layers only"
    return (f"This plan prefetches **{chosen}**: the faster of the two for an {device.split()[0]} "
            f"over {link} at the roofline (`v4c.budget.GUESS_FOR`).")  # fmt: skip


def lens_seconds(data: dict) -> dict[str, float]:
    """Each decode launch node's seconds at batch 1, as the lens estimates its kernels."""
    seconds: dict[str, float] = {}
    for row in data["launches"]:
        if row["entry"] == "decode" and row["bucket"] == "B=1,T=1":
            seconds[row["node"]] = seconds.get(row["node"], 0.0) + row["est_us"] * 1e-6
    return seconds


def lens_section(fit: ExpertFit, plan: Plan, data: dict) -> list[str]:
    """The offloaded decode estimated against the kernel lens's batch-1 decode step (`data`:
    DIR/targets/<target>.json), each launch at its estimate."""
    seconds = lens_seconds(data)
    out = [f"## Offloaded decode against the kernel lens: {data['target']} on {data['card']} "
           "(estimate)", "", WHAT, "", *HEADER]  # fmt: skip
    for link, (bw, _) in LINKS.items():
        out += estimate_rows(f"lens {data['target']}", link_estimates(fit, plan, seconds, bw),
                             link)  # fmt: skip
    return out + ["", policy_line(fit), ""]


def _gib(n: float) -> str:
    return _bytes(n)


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def append_lens(fit: ExpertFit, plan: Plan, out: Path, targets: list[str]) -> list[str]:
    """`v4c compile --device-gb N --target T`: the lens section of each target built into
    `out` appended to its report.md; returns the lines to print."""
    lines = []
    for name in dict.fromkeys(targets):
        data = json.loads((out / "targets" / f"{name}.json").read_text())
        with open(out / "report.md", "a") as report:
            report.write("\n" + "\n".join(lens_section(fit, plan, data)))
        for link, (bw, _) in LINKS.items():
            seconds = lens_seconds(data)
            for routing, (e, h) in link_estimates(fit, plan, seconds, bw).items():
                lines.append(
                    f"offloaded decode, {name} lens, {link}, {routing}: {e.step * 1e3:.2f} ms "
                    f"a token ({e.compute * 1e3:.2f} ms kernels + {e.stall * 1e3:.2f} ms link "
                    f"stalls) guessing, {e.tokens_per_s:.0f} tokens/s; hash layers only "
                    f"{h.step * 1e3:.2f} ms, {h.tokens_per_s:.0f} tokens/s; serial "
                    f"{e.serial_tokens_per_s:.0f} (estimates)"
                )
    return lines
