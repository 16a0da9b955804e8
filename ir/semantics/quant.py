"""The number formats of V4 (V4_REFERENCE §12, §13.2): what the checkpoint stores and what
the official code rounds activations to.

Two jobs share one set of rules, so they live together:
- stored weights: FP8 e4m3 with one E8M0 (power-of-two) scale per 128x128 block, and FP4
  e2m1 routed experts with one E8M0 scale per 32 inputs, packed two codes per byte;
- the activation simulations of `numerics: official`: quantise then dequantise in place
  (`act_quant_fp8`, `fp8_sim`, `fp4_sim`), and the Hadamard rotation before `fp4_sim`.

Every scale is s = 2^ceil(log2(max(amax, floor) / fmax)), with fmax 448 (e4m3) or 6 (e2m1)
and the §12 floors 1e-4 (FP8) and 6*2^-126 (FP4); weights use the same rule as activations.
The exponent is read off `frexp` of the fp32 quotient, which is exact, as the official
kernels' bit trick is (a float `log2` can round 2^k + ulp down to k).

Rounding: e4m3 uses torch's cast (round to nearest, ties to even) after the clamp to ±448.
e2m1 also rounds to nearest with ties to the even code, as the hardware cast
(`cvt.rn.satfinite.e2m1x2.f32`) the official FP4 kernels use does: 0.25 -> 0, 0.75 -> 1,
1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4 (in units of the scale).

Arithmetic is fp32. Shapes: O output rows, I inputs, N the last dim of an activation, nb
blocks along it, `...` any leading dims (stacked experts [E, O, I] quantise in one call).
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import Tensor

from v4c.ir.weights import WeightFormat

E4M3_MAX = 448.0
E2M1_MAX = 6.0
FP8_AMAX_FLOOR = 1e-4
FP4_AMAX_FLOOR = E2M1_MAX * 2.0**-126
E8M0_BIAS = 127
# e2m1 magnitudes by code 0..7 (bit 3 is the sign), and the midpoints between neighbours
E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_E2M1_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


# -- E8M0 scales ---------------------------------------------------------------------------


def pow2_exponent(amax: Tensor, fmax: float, floor: float) -> Tensor:
    """k = ceil(log2(max(amax, floor) / fmax)) as int32, clamped to E8M0's [-127, 127]."""
    ratio = amax.float().clamp(min=floor) / fmax
    mantissa, exponent = torch.frexp(ratio)  # ratio = mantissa * 2^exponent, mantissa in [0.5, 1)
    k = exponent - (mantissa == 0.5).int()  # an exact power of two needs no rounding up
    return k.clamp(-E8M0_BIAS, E8M0_BIAS)


def e8m0_from_exponent(k: Tensor) -> Tensor:
    """Exponents k -> float8_e8m0fnu scales 2^k (byte k + 127)."""
    return (k + E8M0_BIAS).to(torch.uint8).view(torch.float8_e8m0fnu)


def e8m0_to_float(scale: Tensor) -> Tensor:
    """float8_e8m0fnu (or its uint8 bytes) b -> fp32 2^(b - 127)."""
    b = scale.view(torch.uint8) if scale.dtype == torch.float8_e8m0fnu else scale
    return torch.exp2(b.float() - E8M0_BIAS)


# -- FP8 e4m3 block weights ----------------------------------------------------------------


def fp8_block_quantize(w: Tensor, block: tuple[int, int] = (128, 128)) -> tuple[Tensor, Tensor]:
    """w [..., O, I] -> (q float8_e4m3fn [..., O, I], scale float8_e8m0fnu [..., ⌈O/bo⌉, ⌈I/bi⌉]).

    Edge blocks may be partial; zero padding does not change their amax.
    """
    bo, bi = block
    o, i = w.shape[-2:]
    padded = F.pad(w.float(), (0, -i % bi, 0, -o % bo))  # [..., nO*bo, nI*bi]
    tiles = padded.unflatten(-1, (-1, bi)).unflatten(-3, (-1, bo))  # [..., nO, bo, nI, bi]
    k = pow2_exponent(tiles.abs().amax(dim=(-3, -1)), E4M3_MAX, FP8_AMAX_FLOOR)  # [..., nO, nI]
    s = _expand_blocks(torch.exp2(k.float()), block, (o, i))  # [..., O, I]
    q = (w.float() / s).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, e8m0_from_exponent(k)


def fp8_block_dequantize(
    q: Tensor,
    scale: Tensor,
    block: tuple[int, int] = (128, 128),
    dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    """q [..., O, I] e4m3 and scale [..., ⌈O/bo⌉, ⌈I/bi⌉] E8M0 -> W = q * 2^(S - 127) in dtype."""
    s = _expand_blocks(e8m0_to_float(scale), block, q.shape[-2:])  # [..., O, I]
    return (q.float() * s).to(dtype)


def _expand_blocks(s: Tensor, block: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Per-block values [..., nO, nI] -> per-element [..., O, I] (partial edge blocks cropped)."""
    (bo, bi), (o, i) = block, size
    return s.repeat_interleave(bo, dim=-2)[..., :o, :].repeat_interleave(bi, dim=-1)[..., :i]


# -- FP4 e2m1 experts ----------------------------------------------------------------------


def e2m1_codes(y: Tensor) -> Tensor:
    """Values already divided by their scale -> uint8 e2m1 codes (clamp ±6, ties to even)."""
    a = y.abs().clamp(max=E2M1_MAX)
    mids = torch.tensor(_E2M1_MIDPOINTS, device=y.device)
    down = torch.bucketize(a, mids)  # a tie goes to the smaller magnitude
    up = torch.bucketize(a, mids, right=True)  # a tie goes to the larger one
    magnitude = torch.where(down % 2 == 0, down, up)  # differ only at ties: keep the even code
    return (magnitude | (torch.signbit(y).long() << 3)).to(torch.uint8)


def e2m1_values(codes: Tensor) -> Tensor:
    """uint8 codes 0..15 -> fp32 values (§13.2 table; code 8 is -0)."""
    grid = torch.tensor(E2M1_GRID, device=codes.device)
    magnitude = grid[(codes & 7).long()]
    return torch.where((codes & 8) != 0, -magnitude, magnitude)


def fp4_quantize(w: Tensor, block: int = 32) -> tuple[Tensor, Tensor]:
    """w [..., O, I] -> (packed int8 [..., O, I/2], scale float8_e8m0fnu [..., O, I/block]).

    Byte k of a row holds element 2k in its low nibble and element 2k+1 in its high nibble.
    """
    if w.shape[-1] % block:
        raise ValueError(
            f"fp4_quantize: the last dim ({w.shape[-1]}) must be a multiple of {block}"
        )
    tiles = w.float().unflatten(-1, (-1, block))  # [..., O, I/block, block]
    k = pow2_exponent(tiles.abs().amax(-1), E2M1_MAX, FP4_AMAX_FLOOR)  # [..., O, I/block]
    codes = e2m1_codes(tiles / torch.exp2(k.float()).unsqueeze(-1)).flatten(-2)  # [..., O, I]
    pairs = codes.unflatten(-1, (-1, 2))  # [..., O, I/2, 2]
    packed = pairs[..., 0] | (pairs[..., 1] << 4)
    return packed.view(torch.int8), e8m0_from_exponent(k)


def fp4_dequantize(packed: Tensor, scale: Tensor, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """packed int8 [..., O, I/2] and scale E8M0 [..., O, I/block] -> W [..., O, I] in dtype."""
    u = packed.view(torch.uint8)
    codes = torch.stack([u & 15, u >> 4], dim=-1).flatten(-2)  # [..., O, I]
    block = codes.shape[-1] // scale.shape[-1]
    s = e8m0_to_float(scale).repeat_interleave(block, dim=-1)  # [..., O, I]
    return (e2m1_values(codes) * s).to(dtype)


# -- activation simulations (numerics: official) -------------------------------------------


def act_quant_fp8(x: Tensor, block: int = 128) -> Tensor:
    """Per-row FP8 quant->dequant of the activation feeding an FP8 linear: blocks of `block`
    along the last dim, scale 2^ceil(log2(max(amax, 1e-4)/448)), clamp ±448, round to e4m3.
    Returns x's dtype and shape."""
    tiles, n = _row_blocks(x, block)  # [..., nb, block]
    s = _row_scales(tiles, E4M3_MAX, FP8_AMAX_FLOOR)  # [..., nb, 1]
    y = (tiles / s).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float() * s
    return y.flatten(-2)[..., :n].to(x.dtype)


def fp8_sim(x: Tensor, block: int = 64) -> Tensor:
    """The FP8 simulation of the KV non-RoPE dims (§4.2, §6.3): `act_quant_fp8` in blocks of 64."""
    return act_quant_fp8(x, block)


def fp4_sim(x: Tensor, block: int = 32) -> Tensor:
    """FP4 quant->dequant of the indexer q and keys (§7): blocks of `block` along the last dim,
    scale 2^ceil(log2(max(amax, 6*2^-126)/6)), clamp ±6, round to e2m1 (ties to even)."""
    tiles, n = _row_blocks(x, block)  # [..., nb, block]
    s = _row_scales(tiles, E2M1_MAX, FP4_AMAX_FLOOR)  # [..., nb, 1]
    y = e2m1_values(e2m1_codes(tiles / s)) * s
    return y.flatten(-2)[..., :n].to(x.dtype)


def hadamard(x: Tensor) -> Tensor:
    """x H_N / sqrt(N) over the last dim, N a power of two, H in Sylvester (Walsh natural)
    order: H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]]. Orthonormal and its own inverse."""
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(f"hadamard: the last dim ({n}) must be a power of two")
    y = x.float()
    h = 1
    while h < n:  # butterfly: pairs (j, j + h) inside each run of 2h -> (a + b, a - b)
        pairs = y.unflatten(-1, (n // (2 * h), 2, h))  # [..., n/2h, 2, h]
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        y = torch.stack([a + b, a - b], dim=-2).flatten(-3)
        h *= 2
    return (y * n**-0.5).to(x.dtype)


def round_to(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t rounded to `dtype` (round to nearest even) and held in fp32 again, exactly: one of
    the official code's bf16 rounding points inside an op that otherwise computes in fp32."""
    return t.to(dtype).float()


def _row_blocks(x: Tensor, block: int) -> tuple[Tensor, int]:
    """x [..., N] fp32, zero-padded to whole blocks -> ([..., nb, block], N)."""
    n = x.shape[-1]
    return F.pad(x.float(), (0, -n % block)).unflatten(-1, (-1, block)), n


def _row_scales(tiles: Tensor, fmax: float, floor: float) -> Tensor:
    """The power-of-two scale of each block [..., nb, block] -> [..., nb, 1]."""
    return torch.exp2(pow2_exponent(tiles.abs().amax(-1, keepdim=True), fmax, floor).float())


@dataclass(frozen=True)
class QuantWeight:
    """A weight kept in its stored format: `data` (e4m3 [O, I] or packed e2m1 int8 [O, I/2],
    stacked experts with a leading E), its E8M0 `scale`, and the `format` that says which.
    Kernels read it as it is and dequantise on the fly; `dequantize` is the reference."""

    data: torch.Tensor
    scale: torch.Tensor
    format: WeightFormat

    @property
    def shape(self) -> tuple[int, ...]:
        """The logical (dequantised) shape."""
        *lead, cols = self.data.shape
        return (*lead, cols * 2 if self.format.kind == "fp4" else cols)

    @staticmethod
    def quantize(w: torch.Tensor, format: WeightFormat) -> QuantWeight:
        """A dense weight [..., O, I] stored in `format` (FP8 or FP4)."""
        if format.kind == "fp8":
            return QuantWeight(*fp8_block_quantize(w, format.block), format)
        if format.kind == "fp4":
            return QuantWeight(*fp4_quantize(w, format.block[1]), format)
        raise ValueError(f"a {format} weight is not quantised")

    def to(self, device: torch.device | str) -> QuantWeight:
        return QuantWeight(self.data.to(device), self.scale.to(device), self.format)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.format.kind == "fp4":
            return fp4_dequantize(self.data, self.scale, dtype)
        return fp8_block_dequantize(self.data, self.scale, self.format.block, dtype)
