"""Layer patterns: expanding the compact form to one row per layer, and compacting back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Literal

from v4c.spec.schema import CSA_RATIO, AttentionKind, Repeat

if TYPE_CHECKING:
    from v4c.spec.schema import ModelSpec, PatternItem

MAX_EXPANDED = 1_000_000  # a pattern that expands further is an error, not an allocation


def expand(pattern: Iterable[PatternItem], limit: int = MAX_EXPANDED) -> list[AttentionKind]:
    """The attention kind of every layer, in order. Raises ValueError past `limit` layers."""
    out: list[AttentionKind] = []

    def walk(items: Iterable[PatternItem]) -> None:
        for item in items:
            if isinstance(item, Repeat):
                for _ in range(item.repeat):
                    walk(item.of)
            else:
                out.append(item)
            if len(out) > limit:
                raise ValueError(f"the pattern expands to more than {limit} layers")

    walk(pattern)
    return out


def compact(kinds: list[AttentionKind]) -> list[AttentionKind | dict]:
    """A short pattern for `kinds`: at each point, the repeated unit (1-4 layers) that covers
    the most layers; a unit is written as `{repeat, of}` only where that is shorter."""
    out: list[AttentionKind | dict] = []
    i = 0
    while i < len(kinds):
        best_unit, best_count = 1, 1
        for unit in range(1, 5):
            block = kinds[i : i + unit]
            if len(block) < unit:
                break
            count = 1
            while kinds[i + count * unit : i + (count + 1) * unit] == block:
                count += 1
            if count * unit > best_count * best_unit:
                best_unit, best_count = unit, count
        if best_count >= 3 or (best_count == 2 and best_unit >= 2):
            out.append({"repeat": best_count, "of": list(kinds[i : i + best_unit])})
            i += best_unit * best_count
        else:
            out.append(kinds[i])
            i += 1
    return out


@dataclass(frozen=True)
class LayerInfo:
    """One expanded layer: what `v4c spec show` prints and what the IR builder reads."""

    index: int  # 0-based; MTP blocks follow the main layers
    attention: AttentionKind
    compress_ratio: int  # 0 sliding, 4 CSA, hca_ratio HCA
    gate: Literal["hash", "score"]
    rope_theta: float
    yarn: bool  # YaRN applies to this layer's rotary table
    mtp: bool

    @property
    def has_indexer(self) -> bool:
        return self.attention == "csa"


def ratio_of(kind: AttentionKind, hca_ratio: int) -> int:
    return {"sliding": 0, "csa": CSA_RATIO, "hca": hca_ratio}[kind]


def layer_table(spec: ModelSpec) -> list[LayerInfo]:
    """Every main layer, then every MTP block (gate: MTP blocks are never hash-routed)."""
    kinds = expand(spec.layers)
    kinds += [spec.mtp.attention] * spec.mtp.num_layers
    rows = []
    for i, kind in enumerate(kinds):
        compressed = kind != "sliding"
        mtp = i >= spec.num_layers
        rows.append(
            LayerInfo(
                index=i,
                attention=kind,
                compress_ratio=ratio_of(kind, spec.attention.hca_ratio),
                gate="hash" if i < spec.moe.hash_layers and not mtp else "score",
                rope_theta=spec.rope.compress_theta if compressed else spec.rope.theta,
                yarn=compressed and spec.rope.yarn is not None,
                mtp=mtp,
            )
        )
    return rows
