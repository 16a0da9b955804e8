"""Which layout a checkpoint folder is in: the one whose tensor names and dtypes fit the
most of the folder's tensors, for the folder's spec.

Every layout a V4 user meets is tried, in this order (a tie goes to the earlier one, so a
spec with nothing quantised reads as plain, not official):
- plain: official names, every tensor dequantised, no scales;
- official: the release (§13.1): flat names, FP8/FP4 weights with E8M0 `.scale`s where the
  spec's `storage` says so, MTP included;
- hf: the names transformers' modules hold (§13.4), dequantised, experts merged per layer
  (`hf`);
- hf-fp8: the same names for a model transformers holds in FP8 (`weight_scale_inv`);
- hf-saved: what transformers' `save_pretrained` writes, dequantised (`saved`);
- hf-saved-fp8: the same names for a model transformers held in FP8: `.scale`s as official;
- hf-resaved: what `save_pretrained` writes for a model loaded from the hf layout.
Telling them apart by fit, not by a marker name, is what lets a folder of some other model
be reported as such (with the names that fit nothing) instead of as a list of every tensor
the closest layout misses. The fitting tensors must be at least half the folder's and half
the layout's; the problems of the layout taken (a missing, extra or mis-typed tensor) are
then `check_units`'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from v4c.errors import CheckpointError
from v4c.runtime.checkpoint.hf import hf_units
from v4c.runtime.checkpoint.layout import Unit, official_units
from v4c.runtime.checkpoint.read import Header, Shards
from v4c.runtime.checkpoint.saved import resaved_hf_units, saved_units
from v4c.spec import ModelSpec

Layout = Literal["plain", "official", "hf", "hf-fp8", "hf-saved", "hf-saved-fp8", "hf-resaved"]
LAYOUTS: dict[Layout, Callable[[ModelSpec], list[Unit]]] = {
    "plain": lambda spec: official_units(spec, quantised=False),
    "official": official_units,
    "hf": hf_units,
    "hf-fp8": lambda spec: hf_units(spec, quantised=True),
    "hf-saved": lambda spec: saved_units(spec, quantised=False),
    "hf-saved-fp8": saved_units,
    "hf-resaved": resaved_hf_units,
}
SHOWN_NAMES = 5


def detect_layout(shards: Shards, spec: ModelSpec) -> Layout:
    """The layout that fits the most of the folder's tensors (name and dtype), if they are at
    least half of the folder's and half of the layout's; else a CheckpointError naming the
    layouts tried and the first tensors no layout has."""
    return detect_units(shards, spec)[0]


def detect_units(shards: Shards, spec: ModelSpec) -> tuple[Layout, list[Unit]]:
    """`detect_layout`, with the units of the layout found."""
    units: dict[Layout, list[Unit]] = {}
    fits: dict[Layout, int] = {}
    for layout, units_of in LAYOUTS.items():
        try:
            units[layout] = units_of(spec)
        except CheckpointError:  # a layout that cannot hold this spec (hf: > 1 shared expert)
            continue
        fits[layout] = len(_fit(units[layout], shards.headers))
    best = max(fits, key=fits.__getitem__)
    fit, total, expected = fits[best], len(shards.headers), len(_names(units[best]))
    if 2 * fit >= total and 2 * fit >= expected:
        return best, units[best]
    known = set().union(*(_names(u) for u in units.values()))
    strays = sorted(n for n in shards.headers if n not in known)
    shown = ", ".join(strays[:SHOWN_NAMES]) + (", ..." if len(strays) > SHOWN_NAMES else "")
    raise CheckpointError(
        f"{shards.where}: the tensors fit no checkpoint layout of {spec.name}: tried "
        f"{', '.join(fits)}; the closest, {best}, has {fit} of the folder's {total} tensors "
        f"and of its own {expected}; names in no layout: {shown or 'none'}"
    )


def _names(units: list[Unit]) -> set[str]:
    return {s.name for u in units for s in u.stored}


def _fit(units: list[Unit], headers: dict[str, Header]) -> set[str]:
    """The stored tensors that `units` have, with an accepted dtype."""
    accepted = {s.name: s.dtypes for u in units for s in u.stored}
    return {name for name, h in headers.items() if h.dtype in accepted.get(name, ())}
