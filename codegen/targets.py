"""What the kernel lens knows of a GPU it does not have: one card per compile target.

`v4c compile --target sm_90` builds every kernel for a CUDA capability and estimates it on
that target's default card (named in every report). The figures are public datasheet
numbers (dense, no sparsity), cited beside each card; they are the only hardware facts
`codegen/cost.py` uses. They are corrected only from measurements (`bench/gpu_check.sh`'s
estimate stage), never tuned to make an estimate look right.

Sources:
- A100: NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): 2,039 GB/s HBM2e, 312 TFLOPS
  BF16, 156 TF32, 19.5 FP32; 108 SMs, 40 MB L2, 164 KB shared memory per SM (163 KB a
  block): NVIDIA Ampere GA100 architecture whitepaper.
- L40S: NVIDIA L40S datasheet: 864 GB/s GDDR6, 362.05 TFLOPS BF16, 733 FP8, 183 TF32,
  91.6 FP32; 142 SMs, 96 MB L2; Ada (sm_89) allows 99 KB shared memory a block (CUDA C
  Programming Guide, "Compute capabilities" table).
- H100 / H200 SXM: NVIDIA H100 and H200 datasheets: 3.35 TB/s HBM3 (H100), 4.8 TB/s HBM3e
  (H200); 989 TFLOPS BF16, 1,979 FP8, 494.5 TF32, 67 FP32; 132 SMs, 50 MB L2, 227 KB
  shared memory a block (Hopper tuning guide).
- mma.sync on Hopper: the warp-level HMMA path reaches about two thirds of the wgmma peak
  (Luo et al., "Benchmarking and Dissecting the Nvidia Hopper GPU Architecture", 2024,
  mma.sync ~660 TFLOPS BF16 on H800): an assumption to calibrate.
- Launch cost inside a CUDA graph: about 2 µs from one kernel node's end to the next
  one's start on recent GPUs (NVIDIA technical blog "Getting Started with CUDA Graphs"
  measured 3.4 µs a kernel on V100; newer drivers and GPUs are faster): an assumption to
  calibrate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from v4c.errors import V4CError

TB, TF, MB, KB = 1e12, 1e12, 1 << 20, 1 << 10


@dataclass(frozen=True)
class Card:
    """One GPU's facts. `peak`: FLOP/s by MMA kind `<wgmma|mma|fma> <operand type>`."""

    name: str
    hbm_bytes_s: float
    sms: int
    l2_bytes: int
    smem_block: int  # the most shared memory one CTA may use (opt-in)
    peak: dict[str, float] = field(default_factory=dict)
    launch_s: float = 2e-6  # one kernel node inside a CUDA graph (see the module docstring)

    def flops_s(self, kind: str) -> float:
        """The peak of an MMA kind; a kind this card lacks runs at its FP32 FMA rate."""
        return self.peak.get(kind, self.peak["fma fp32"])


def _hopper(name: str, hbm: float) -> Card:
    bf16, fp8, tf32 = 989 * TF, 1979 * TF, 494.5 * TF
    peak = {"wgmma bf16": bf16, "wgmma fp16": bf16, "wgmma fp8": fp8, "wgmma tf32": tf32}
    peak |= {f"mma {k.split()[1]}": v * 2 / 3 for k, v in peak.items()}
    return Card(name, hbm, 132, 50 * MB, 227 * KB, peak | {"fma fp32": 67 * TF})


A100 = Card(
    "A100 SXM 80GB", 2.039 * TB, 108, 40 * MB, 163 * KB,
    {"mma bf16": 312 * TF, "mma fp16": 312 * TF, "mma tf32": 156 * TF, "fma fp32": 19.5 * TF},
)  # fmt: skip
L40S = Card(
    "L40S", 0.864 * TB, 142, 96 * MB, 99 * KB,
    {"mma bf16": 362 * TF, "mma fp16": 362 * TF, "mma fp8": 733 * TF, "mma tf32": 183 * TF,
     "fma fp32": 91.6 * TF},
)  # fmt: skip
H100 = _hopper("H100 SXM", 3.35 * TB)
H200 = _hopper("H200 SXM", 4.8 * TB)


@dataclass(frozen=True)
class Target:
    """A compile target: the CUDA capability Triton builds for and the card it is
    estimated on (`v4c compile --target sm_90` -> H200, the card the plan is sized for)."""

    name: str  # sm_90
    capability: int  # 90
    card: Card
    warp_size: int = 32


TARGETS = {
    "sm_80": Target("sm_80", 80, A100),
    "sm_89": Target("sm_89", 89, L40S),
    "sm_90": Target("sm_90", 90, H200),
}
CARDS = {c.name: c for c in (A100, L40S, H100, H200)}


def target(name: str) -> Target:
    """`sm_90` (also `sm90`, `90`) -> its Target."""
    key = name.strip().lower().removeprefix("sm").lstrip("_")
    found = TARGETS.get(f"sm_{key}")
    if found is None:
        raise V4CError(f"--target {name!r}: expected one of {', '.join(TARGETS)}")
    return found


def card_for(device_name: str, default: Card) -> Card:
    """The card a CUDA device name (torch.cuda.get_device_name) is, else `default`."""
    for key, card in (("H200", H200), ("H100", H100), ("A100", A100), ("L40S", L40S)):
        if key in device_name:
            return card
    return default
