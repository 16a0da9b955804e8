"""report.md's section on the device budget: what fits, what is offloaded, the host-link
bytes per decode token the profile predicts and what they are estimated to cost.

The cost model, an estimate: a decode token reads its weights and caches from device memory
at the HBM bandwidth, and its offloaded expert picks over the host link at the link's
bandwidth, one after the other (no overlap credited), both at nominal peak (achieved
bandwidth is lower: the estimate is a bound, not a measurement).
"""

from __future__ import annotations

from v4c.budget import GiB, LINKS, ExpertFit
from v4c.report import _bytes, decode_read_bytes
from v4c.spec import ModelSpec
from v4c.spec.parallel import DEVICE_GB

# Nominal HBM bandwidth, bytes/s, of the devices a budget is usually drawn for, and the
# memory a process gets on them (GiB, about: what CUDA reports free on an idle device).
HBM = {
    "H200 (141 GB HBM3e)": (4.8e12, DEVICE_GB, "NVIDIA H200 Tensor Core GPU datasheet"),
    "H100 SXM (80 GB HBM3)": (3.35e12, 78, "NVIDIA H100 Tensor Core GPU datasheet"),
}


def tokens_per_s(read: float, host: float, hbm: float, link: float) -> float:
    """Estimated batch-1 decode tokens/s: `read` device bytes and `host` link bytes a token."""
    return 1 / (read / hbm + host / link)


def budget_section(fit: ExpertFit, spec: ModelSpec) -> list[str]:
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
    read = sum(decode_read_bytes(spec)[0].values())
    out += ["", f"Host-link bytes per decode token (main model, top-{fit.top_k} picks a layer "
            f"x miss share x {_mib(fit.slot_bytes)} an expert): **{_mib(host)}**.", ""]  # fmt: skip
    out += ["Estimated cost (an estimate: nominal bandwidths, link time not overlapped with "
            "the step, batch 1; device bytes per token as in the first section, "
            f"{_mib(read)}):", ""]  # fmt: skip
    out += ["| device | link | link time per token | est. decode tokens/s |",
            "| --- | --- | ---: | ---: |"]  # fmt: skip
    for device, (hbm, memory, _) in HBM.items():
        if fit.budget > memory * GiB:  # this budget does not fit that device
            continue
        for link, (bw, _) in LINKS.items():
            ms = host / bw * 1e3
            out.append(f"| {device} | {link} | {ms:.2f} ms | "
                       f"{tokens_per_s(read, host, hbm, bw):.0f} |")  # fmt: skip
    cited = {k: (v[0], v[-1]) for k, v in {**HBM, **LINKS}.items()}
    out += ["", "Devices whose memory (about 139 GiB an H200, 78 GiB an H100) holds the budget. "
            "Bandwidths: " + "; ".join(f"{k} {v / 1e9:g} GB/s ({why})"
            for k, (v, why) in cited.items()) + ".", ""]  # fmt: skip
    return out


def _gib(n: float) -> str:
    return _bytes(n)


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"
