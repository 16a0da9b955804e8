"""A routing profile: per MoE layer, per routed expert, how often the router picked it.

Written by `v4c run/bench --record-experts FILE`, read by `v4c compile --expert-profile FILE`
to choose which experts stay resident on the device when they do not all fit (`v4c.budget`).
One JSON object: {"spec": name, "tokens": tokens routed, "picks": {layer: [count per expert]}},
a layer named by its weights' prefix (`layers.3`, `mtp.0`), so a profile recorded with one
plan applies to any plan of the same spec (another batch, budget or backend).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from v4c.errors import V4CError


class ProfileError(V4CError):
    """A routing profile that cannot be read or does not match the plan."""


@dataclass
class ExpertProfile:
    spec: str
    picks: dict[str, list[int]] = field(default_factory=dict)
    tokens: int = 0

    def add(self, layer: str, counts: list[int], tokens: int = 0) -> None:
        """Add one step's picks of one layer (`tokens` counts the step once per step)."""
        old = self.picks.setdefault(layer, [0] * len(counts))
        if len(old) != len(counts):
            raise ProfileError(f"{layer}: {len(counts)} experts, the profile has {len(old)}")
        self.picks[layer] = [a + b for a, b in zip(old, counts)]
        self.tokens += tokens

    def share(self, layer: str, experts: int) -> list[float] | None:
        """The fraction of the layer's picks each expert got, None if the layer was never
        routed; a layer recorded with another expert count is an error."""
        counts = self.picks.get(layer)
        if counts is None or not sum(counts):
            return None
        if len(counts) != experts:
            raise ProfileError(f"{layer}: {len(counts)} experts profiled, the plan has {experts}")
        total = sum(counts)
        return [c / total for c in counts]

    def save(self, path: Path) -> None:
        data = {"spec": self.spec, "tokens": self.tokens, "picks": self.picks}
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    @staticmethod
    def load(path: Path, spec: str | None = None) -> ExpertProfile:
        """Read a profile, checked to be of `spec` when given."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ProfileError(f"{path}: not a routing profile: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("picks"), dict):
            raise ProfileError(f"{path}: expected {{spec, tokens, picks: {{layer: [counts]}}}}")
        for layer, counts in data["picks"].items():
            if not isinstance(counts, list) or not all(
                isinstance(c, int) and c >= 0 for c in counts
            ):
                raise ProfileError(f"{path}: {layer}: picks must be counts (integers >= 0)")
        if spec is not None and data.get("spec") != spec:
            raise ProfileError(f"{path}: recorded with spec {data.get('spec')!r}, not {spec!r}")
        return ExpertProfile(data.get("spec", ""), data["picks"], int(data.get("tokens", 0)))
