"""The KV compressor (V4_REFERENCE §6): gated pooling of every `ratio` tokens into one
compressed entry, written to a cache by the convention of `v4c.ir.ops.core`.

Shape legend: B rows, T tokens, N cache rows, c compressor width, m ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from v4c.ir.op import register
from v4c.ir.ops.core import _check_slots
from v4c.ir.ops.rope import _Rotary
from v4c.ir.roles import CompressorRole, as_role
from v4c.spec.schema import CSA_RATIO, coff


@register
@dataclass(frozen=True)
class Compressor(_Rotary):
    """Gated pooling of every `ratio` tokens into one compressed entry (§6); appends the
    entries this step completes to `cache` and keeps partial windows in the state. Its
    inputs are the projections K = x wkvᵀ and Z = x wgateᵀ (fp32 linears of the plan)."""

    kind = "compressor"
    operands = (
        "k", "z", "positions", "slots", "ape", "norm", "state_kv", "state_score", "cache",
    )  # fmt: skip
    aliases = {0: 8}  # returns the cache it appended to
    rounding_attrs = ("sim",)
    ratio: int = CSA_RATIO
    eps: float = 1e-6
    sim: str = (
        "none"  # numerics: official rounds new entries: "fp8" (non-RoPE dims), "fp4" (Hadamard)
    )
    role: CompressorRole = field(default=CompressorRole.ATTENTION, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", as_role(self, CompressorRole, self.role))

    def infer(self, ins):
        kx, z, pos, slots, ape, norm, skv, sscore, cache = ins
        _check_slots(self, pos, slots, skv, sscore, cache)
        k, c = coff(self.ratio), norm.shape[0]
        self.expect(kx.shape == z.shape == (*pos.shape, k * c), f"K {kx}, Z {z} for {pos}")
        self.expect(ape.shape == (self.ratio, k * c), f"ape {ape}")
        self.expect(skv.shape[1:] == sscore.shape[1:] == (k * self.ratio, k * c), f"state {skv}")
        self.expect(cache.shape[-1] == c, f"cache {cache} for width {c}")
        return (cache,)

    def run(self, ins):
        from v4c.ir.semantics.compressor import compress_projected

        k, z, pos, slots, ape, norm, skv, sscore, cache = ins
        compress_projected(
            k, z, pos, ape, norm, ratio=self.ratio, rope_freqs=self.freqs(k.device),
            rope_dim=self.rope_dim, eps=self.eps, slots=slots, state_kv=skv, state_score=sscore,
            cache=cache, sim=self.sim,
        )  # fmt: skip
        return (cache,)
