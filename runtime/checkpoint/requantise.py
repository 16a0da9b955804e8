"""Which official storage formats a set of dense weights can be written in without loss.

Why: a checkpoint converted from the official release to transformers' layout holds the
dequantised values (FP8 e4m3 or FP4 e2m1 times a power-of-two scale, exact in bf16 and
fp32), and its config no longer says how they were stored. Converted back, they are
quantised again with the official formats only where that gives back every value bit for
bit (the quantiser finds the same scales and codes), so official -> hf -> official returns
the release's bytes; weights that are not exactly representable stay plain, never rounded
silently.

One value can have two encodings: a block whose largest code is the format's largest
(448, or 6 in FP4) and whose codes all halve exactly is also the block one scale up with
half the codes; the quantiser picks the smaller scale from the block's amax, while the
release had the larger one wherever its amax rounded down to the top code of that scale.
`larger_exact_scales` takes the larger one in that case, so the bytes come back too (a
block quantised fresh at the smaller scale with only even codes is the rare exception:
for FP8 it needs every one of its 16384 codes to halve exactly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from v4c.ir.semantics.quant import E2M1_MAX, E4M3_MAX, e2m1_codes, e2m1_values
from v4c.runtime.checkpoint.layout import Unit, official_units
from v4c.spec import ModelSpec

# the official releases' formats first: FP8 dense weights with FP4 experts, then FP8 experts
CANDIDATES = (("fp8", "fp4"), ("fp8", "fp8"))


def lossless_storage(spec: ModelSpec, weights: dict[str, Tensor]) -> ModelSpec | None:
    """`spec` with the first of `CANDIDATES` in which every weight round-trips exactly
    (the spec's own storage when it is quantised already), or None: plain it stays."""
    if spec.quant.weights != "bf16":
        return spec
    for dense, experts in CANDIDATES:
        quant = spec.quant.model_copy(update={"weights": dense, "experts": experts})
        candidate = spec.model_copy(update={"quant": quant})
        if _exact(candidate, weights):
            return candidate
    return None


def _exact(spec: ModelSpec, weights: dict[str, Tensor]) -> bool:
    """Whether every quantised unit of `spec`'s official layout decodes back to `weights`."""
    for unit in official_units(spec):
        if not any(s.scale_of for s in unit.stored):
            continue  # a plain tensor: written as it is
        values = [weights[t.name] for t in unit.logical]
        back = unit.decode(unit.encode(values), torch.float32)
        if not all(torch.equal(b, v.float()) for b, v in zip(back, values)):
            return False
    return True


def larger_exact_scales(unit: Unit, stored: list[Tensor], block: tuple[int, int]) -> list[Tensor]:
    """`stored` (what `unit.encode` gave) with each block one scale up where its codes
    allow it exactly (see the module doc); `block` is the FP8 scale block [out, in]."""
    out = list(stored)
    for j, s in enumerate(unit.stored):
        if s.scale_of is not None:  # the weight precedes its scale
            up = _fp8_up if out[j - 1].dtype == torch.float8_e4m3fn else _fp4_up
            out[j - 1], out[j] = up(out[j - 1], out[j], block)
    return out


def _fp8_up(q: Tensor, scale: Tensor, block: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """e4m3 [O, I] and E8M0 [nO, nI] -> the same values, a scale up where exact."""
    (bo, bi), (o, i) = block, q.shape
    tiles = F.pad(q.float(), (0, -i % bi, 0, -o % bo)).unflatten(-1, (-1, bi))
    tiles = tiles.unflatten(0, (-1, bo))  # [nO, bo, nI, bi]
    half = tiles / 2
    exact = (half.to(torch.float8_e4m3fn).float() == half).all(-1).all(1)  # [nO, nI]
    up = exact & (tiles.abs().amax((1, 3)) == E4M3_MAX) & (scale.view(torch.uint8) < 254)
    every = up.repeat_interleave(bo, 0)[:o].repeat_interleave(bi, 1)[:, :i]  # [O, I]
    q = torch.where(every, q.float() / 2, q.float()).to(torch.float8_e4m3fn)
    return q, (scale.view(torch.uint8) + up.to(torch.uint8)).view(scale.dtype)


def _fp4_up(packed: Tensor, scale: Tensor, _block) -> tuple[Tensor, Tensor]:
    """packed e2m1 [O, I/2] and E8M0 [O, I/32] -> the same values, a scale up where exact."""
    u = packed.view(torch.uint8)
    codes = torch.stack([u & 15, u >> 4], dim=-1).flatten(-2)  # [O, I]
    tiles = e2m1_values(codes).unflatten(-1, (scale.shape[-1], -1))  # [O, I/32, 32]
    half = tiles / 2
    exact = (e2m1_values(e2m1_codes(half)) == half).all(-1)  # [O, I/32]
    up = exact & (tiles.abs().amax(-1) == E2M1_MAX) & (scale.view(torch.uint8) < 254)
    codes = e2m1_codes(torch.where(up.unsqueeze(-1), half, tiles)).flatten(-2)
    pairs = codes.unflatten(-1, (-1, 2))
    packed = (pairs[..., 0] | (pairs[..., 1] << 4)).view(torch.int8)
    return packed, (scale.view(torch.uint8) + up.to(torch.uint8)).view(scale.dtype)
