"""What `v4c bench` measured (`BenchResult`), as the lines it prints and the JSON it writes.

Why apart from the measuring: the figures' names and their wording are read by people and
by scripts (BENCHMARKS.md, `bench/gpu_check.sh`); they change for other reasons than how a
step is timed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class BenchResult:
    spec: str
    device: str
    backend: str
    dtype: str
    weights: str
    batch: int
    prompt_len: int
    decode_steps: int
    launches: dict[str, int] = field(default_factory=dict)  # per step, by entry
    host_ms_per_step: dict[str, float] = field(default_factory=dict)
    host_us_per_launch: dict[str, float] = field(default_factory=dict)
    prefill_tokens_per_s: float = 0.0
    decode_ms_per_token: float = 0.0
    decode_tokens_per_s: float = 0.0
    bytes_per_decode_token: int = 0
    achieved_gb_per_s: float = 0.0
    copy_gb_per_s: float = 0.0
    bandwidth_fraction: float = 0.0
    repeat: int = 1  # timed runs of the prefill and of the decode steps; figures are medians
    runs: dict[str, list[float]] = field(default_factory=dict)  # figure -> each run's value
    hf: dict[str, float] = field(default_factory=dict)  # the same figures for transformers
    speculation: dict[str, dict] = field(default_factory=dict)  # mode -> figures (see above)
    experts: dict[str, float] = field(default_factory=dict)  # offload: per decode token

    def to_dict(self) -> dict:
        return asdict(self)


def format_result(r: BenchResult) -> list[str]:
    """The lines `v4c bench` prints."""
    lines = [
        f"{r.spec} on {r.device}: backend {r.backend}, activations {r.dtype}, weights "
        f"{r.weights}, batch {r.batch}, prompt {r.prompt_len}, {r.decode_steps} decode steps",
    ]
    for entry in ("prefill", "decode"):
        lines.append(
            f"  {entry:<8} {r.launches[entry]:>5} launches/step, host "
            f"{r.host_ms_per_step[entry]:.3f} ms/step = {r.host_us_per_launch[entry]:.2f} us/launch"
        )
    lines += [
        f"  prefill  {r.prefill_tokens_per_s:,.1f} tokens/s{_spread(r, 'prefill_tokens_per_s')}",
        f"  decode   {r.decode_ms_per_token:.3f} ms/step, {r.decode_tokens_per_s:,.1f} tokens/s"
        f"{_spread(r, 'decode_tokens_per_s')}",
        f"  reads    {r.bytes_per_decode_token / 1e9:.3f} GB per decode token: "
        f"{r.achieved_gb_per_s:.1f} GB/s = {100 * r.bandwidth_fraction:.1f} % of the "
        f"measured copy bandwidth ({r.copy_gb_per_s:.1f} GB/s)",
    ]
    if r.experts:
        e = r.experts
        lines.append(
            f"  experts  per decode token: {e['hit_on_device']:.1f} picks hit on the device, "
            f"{e['read_from_host']:.1f} read from host memory, "
            f"{e['host_link_bytes'] / 2**20:.2f} MiB over the host link"
        )
        if "resident_decode_ms_per_token" in e:
            alone = e["resident_decode_ms_per_token"]
            lines.append(
                f"  resident {alone:.3f} ms/step with every expert on the device: offload "
                f"costs {r.decode_ms_per_token - alone:+.3f} ms/step"
            )
    for mode, f in r.speculation.items():
        rate = (
            f", {100 * f['acceptance']:.0f} % accepted, {f['tokens_per_step']:.2f} tokens/step"
            if "acceptance" in f
            else ""
        )
        k = f" K={f['draft_tokens']}" if f["draft_tokens"] else ""
        lines.append(
            f"  greedy {mode:<10}{k:<5} {f['tokens_per_s']:,.1f} tokens/s "
            f"({f['speedup']:.2f}x off){rate}"
        )
    if r.hf:
        lines += [
            f"  transformers (eager): prefill {r.hf['prefill_tokens_per_s']:,.1f} tokens/s, "
            f"decode {r.hf['decode_ms_per_token']:.3f} ms/step",
            f"  ratio v4c / transformers: prefill "
            f"{r.prefill_tokens_per_s / r.hf['prefill_tokens_per_s']:.2f}x, decode "
            f"{r.hf['decode_ms_per_token'] / r.decode_ms_per_token:.2f}x",
        ]
    lines.append(
        f"decode speed: {r.decode_tokens_per_s:,.1f} tokens/s (batch {r.batch}, after a "
        f"{r.prompt_len}-token prompt; median of {r.repeat} run{'s' * (r.repeat > 1)} of "
        f"{r.decode_steps} steps)"
    )
    return lines


def _spread(r: BenchResult, figure: str) -> str:
    """`(median of N: min a, max b)` over the timed runs of a figure, empty for one run."""
    runs = r.runs.get(figure, [])
    if len(runs) < 2:
        return ""
    return f" (median of {len(runs)}: min {min(runs):,.1f}, max {max(runs):,.1f})"


def write_json(result: BenchResult, path: Path) -> None:
    import json

    path.write_text(json.dumps(result.to_dict(), indent=1, sort_keys=True) + "\n")
