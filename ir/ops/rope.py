"""RoPE (V4_REFERENCE §5) and `_Rotary`, the fields and frequency table of every op that
rotates (rope and the norms, compressor and indexer that fold a rotation in).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from v4c.ir.op import Op, register


Yarn = (
    tuple[float, int, float, float] | None
)  # factor, original max positions, beta_fast, beta_slow


@dataclass(frozen=True)
class _Rotary(Op):
    rope_dim: int = 64
    theta: float = 10000.0
    yarn: Yarn = None

    def freqs(self, device: Any):
        import torch

        return _freqs(self.rope_dim, self.theta, self.yarn, torch.device(device))


@lru_cache(maxsize=64)
def _freqs(rope_dim: int, theta: float, yarn: Yarn, device: Any = "cpu"):
    """The RoPE frequencies of a layer, made once per device (a step never copies a table)."""
    from v4c.ir.semantics.rope import rope_freqs

    keys = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow")
    return rope_freqs(rope_dim, theta, dict(zip(keys, yarn)) if yarn else None).to(device)


@register
@dataclass(frozen=True)
class Rope(_Rotary):
    """Interleaved RoPE on the trailing `rope_dim` channels; `inverse` rotates back."""

    kind = "rope"
    operands = ("x", "positions")
    inverse: bool = False

    def infer(self, ins):
        x, pos = ins
        self.expect(pos.shape == x.shape[:2] and pos.dtype == "i64", f"positions {pos} for {x}")
        self.expect(self.rope_dim <= x.shape[-1], f"rope_dim {self.rope_dim} > {x}")
        return (x,)

    def run(self, ins):
        from v4c.ir.semantics.rope import apply_rope

        x, pos = ins
        return (apply_rope(x, pos, self.freqs(x.device), inverse=self.inverse),)
