"""The options of expert offload that `run` and `bench` share: the device budget, the routing
profile that chooses the resident experts, and recording one (`v4c.expert_profile`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RecordExperts = Annotated[
    Path | None,
    typer.Option(
        "--record-experts",
        help="Write a routing profile here: per layer, per expert, how often it was picked "
        "(for v4c compile --expert-profile).",
    ),
]
ExpertProfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--expert-profile",
        help="A routing profile (--record-experts): the most picked experts stay on the device.",
    ),
]
DeviceGb = Annotated[
    float | None,
    typer.Option(
        "--device-gb",
        min=0.001,
        help="Device memory budget (GiB): the routed experts that do not fit live in host "
        "memory (see v4c compile).",
    ),
]


def save_profile(path: Path, spec: str, picks: dict) -> None:
    """Write the counts `Engine.record_experts` gathered as a profile."""
    from v4c.expert_profile import ExpertProfile

    profile = ExpertProfile(spec)
    for layer, counts in picks.items():
        profile.add(layer, counts.tolist())
    profile.save(path)
    typer.echo(f"wrote the routing profile of {len(picks)} layers to {path}")
