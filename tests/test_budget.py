"""The device budget (`v4c compile --device-gb N`): nothing planned on the device beyond N GiB,
the most experts that fit kept, the hottest of a routing profile first, a budget below the
dense part refused with a minimum that does fit; the report and plan.json say the same."""

from __future__ import annotations

import json
import re

import pytest

from tests.test_cli import v4c
from v4c.budget import GiB, BudgetError, fit, routed_experts
from v4c.compile import compile_spec, write_output
from v4c.expert_profile import ExpertProfile, ProfileError
from v4c.report import rank_memory
from v4c.spec import load_spec


@pytest.fixture(scope="module")
def tiny():
    spec = load_spec("tiny")
    return spec, compile_spec(spec).plan


def _minimum(plan, top_k) -> int:
    """The smallest budget that fits: the dense part and a slot cache a layer (the picks of
    a one-token step), by hand."""
    groups = routed_experts(plan)
    slots = len(groups) * min(plan.options["max_batch"] * top_k, 8)
    experts = sum(e * b for e, b in groups.values())
    return rank_memory(plan).total - experts + slots * max(b for _, b in groups.values())


def test_everything_fits_offloads_nothing(tiny):
    spec, plan = tiny
    f = fit(plan, rank_memory(plan).total / GiB, spec.moe.top_k)
    assert f.slots == 0 and f.to_plan() == {} and f.host_bytes_per_token() == 0
    assert f.device_bytes == rank_memory(plan).total


@pytest.mark.parametrize("extra_experts", [0, 1, 7, 17])
def test_budget_is_never_exceeded_and_filled(tiny, extra_experts):
    spec, plan = tiny
    size = max(b for _, b in routed_experts(plan).values())
    budget = _minimum(plan, spec.moe.top_k) + extra_experts * size + size // 2
    f = fit(plan, budget / GiB, spec.moe.top_k)
    assert f.device_bytes <= budget < f.device_bytes + size  # one more expert would not fit
    resident = [len(layer.resident) for layer in f.layers.values()]
    assert sum(resident) == extra_experts and max(resident) - min(resident) <= 1  # uniform
    for layer in f.layers.values():  # default: the lowest expert ids stay
        assert layer.resident == tuple(range(len(layer.resident)))
        assert layer.miss == pytest.approx(1 - len(layer.resident) / layer.experts)


def test_below_the_dense_part_is_refused_with_a_minimum_that_fits(tiny):
    spec, plan = tiny
    experts = sum(e * b for e, b in routed_experts(plan).values())
    dense = rank_memory(plan).total - experts
    with pytest.raises(BudgetError, match=r"needs at least .* pass --device-gb [\d.]+ or more"):
        fit(plan, dense / GiB, spec.moe.top_k)
    with pytest.raises(BudgetError) as err:
        fit(plan, (_minimum(plan, spec.moe.top_k) - 1) / GiB, spec.moe.top_k)
    stated = float(re.search(r"pass --device-gb ([\d.]+)", str(err.value))[1]) * GiB
    assert fit(plan, stated / GiB, spec.moe.top_k).device_bytes <= stated
    exact = fit(plan, _minimum(plan, spec.moe.top_k) / GiB, spec.moe.top_k)
    assert exact.resident_bytes == 0 and exact.slots == 2  # a layer: 1 row x 2 picks


def test_profile_picks_the_hottest_experts(tiny, tmp_path):
    spec, plan = tiny
    groups = routed_experts(plan)
    profile = ExpertProfile(spec.name)
    for i, (name, (n, _)) in enumerate(groups.items()):
        profile.add(name, [(e * 7 + i) % n + 1 for e in range(n)], tokens=1)
    path = tmp_path / "profile.json"
    profile.save(path)
    loaded = ExpertProfile.load(path, spec.name)
    assert loaded == profile  # round trip
    size = max(b for _, b in groups.values())
    budget = _minimum(plan, spec.moe.top_k) + 5 * size
    f = fit(plan, budget / GiB, spec.moe.top_k, loaded)
    layers = f.layers.items()
    kept = [(profile.picks[n][e], n, e) for n, layer in layers for e in layer.resident]
    dropped = [(profile.picks[n][e], n, e) for n, layer in layers for e in layer.offloaded]
    shares = {n: sum(c) for n, c in profile.picks.items()}
    assert min(c / shares[n] for c, n, _ in kept) >= max(c / shares[n] for c, n, _ in dropped)
    for name, layer in f.layers.items():
        counts = profile.picks[name]
        assert layer.miss == pytest.approx(sum(counts[e] for e in layer.offloaded) / sum(counts))
    with pytest.raises(ProfileError, match="recorded with spec"):
        ExpertProfile.load(path, "flash")


def test_report_and_plan_agree(tiny, tmp_path):
    spec, plan = tiny
    size = max(b for _, b in routed_experts(plan).values())
    budget = _minimum(plan, spec.moe.top_k) + 3 * size
    compiled = write_output(spec, tmp_path, device_gb=budget / GiB)
    offload = json.loads((tmp_path / "plan.json").read_text())["offload"]
    assert offload == compiled.plan.offload and offload["budget_bytes"] == int(budget)
    groups = routed_experts(compiled.plan)
    dense = rank_memory(compiled.plan).total - sum(e * b for e, b in groups.values())
    cached = len(groups) * offload["slots"]  # a slot cache in each layer of routed experts
    held = dense + cached * size + size * sum(map(len, offload["resident"].values()))
    assert held <= budget
    report = (tmp_path / "report.md").read_text()
    for name, ids in offload["resident"].items():
        assert f"| {name} | {len(ids)}/{groups[name][0]} |" in report
    assert "Host-link bytes per decode token" in report and "estimate" in report


def test_cli_refuses_a_budget_below_the_minimum_and_offloads_above(tiny, tmp_path):
    """Below the minimum: refused with a budget that fits (the minimum rounded up to 0.01
    GiB); the minimum plus one expert's bytes keeps one expert resident."""
    spec, plan = tiny
    least = _minimum(plan, spec.moe.top_k)
    out = v4c("compile", "tiny", "--device-gb", "0.1", "-o", str(tmp_path))
    suggested = float(re.search(r"pass --device-gb ([0-9.]+) or more", out.stderr).group(1))
    assert out.returncode != 0 and least / GiB <= suggested < least / GiB + 0.01
    size = max(b for _, b in routed_experts(plan).values())
    budget = f"{(least + size + 1024) / GiB:.6f}"  # + 1 KiB for the printed digits
    out = v4c("compile", "tiny", "--device-gb", budget, "-o", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "offload: 1 routed experts resident" in out.stdout
    assert "| layers.0 | 1/8 |" in (tmp_path / "report.md").read_text()
