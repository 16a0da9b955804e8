"""RMSNorm pieces: the inverse RMS of a row (fp32), computed over `n` real elements of a
masked block (masked lanes must be loaded as 0)."""

import triton
import triton.language as tl


@triton.jit
def inv_rms(x, n: tl.constexpr, eps):
    """1 / sqrt(mean(x²) + eps) for a [BLOCK] fp32 row whose padding lanes are 0."""
    return 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n + eps)
