"""The host-link model of an offloaded decode step (`v4c.link_model`) against numbers worked
by hand, its layers read off a plan as the runtime binds the prefetch, and the skew
scenario's Zipf fit against the measurements it is fitted to."""

from __future__ import annotations

import json

import pytest

from v4c.budget import LINKS, GiB, fit, minimum_bytes, routed_experts
from v4c.budget_report import (
    HBM,
    append_lens,
    budget_section,
    estimate_rows,
    link_estimates,
    roofline_seconds,
    scenarios,
    SKEW,
)
from v4c.compile import compile_spec
from v4c.expert_profile import ExpertProfile
from v4c.link_model import (
    PREDICTED,
    LayerLink,
    binomial,
    estimate,
    guess_pays,
    layer_links,
    layer_stall,
    skew_miss,
    zipf_shares,
)
from v4c.passes.base import CompileOptions
from v4c.spec import load_spec


def test_binomial_by_hand():
    assert binomial(2, 0.5) == pytest.approx([0.25, 0.5, 0.25])
    assert binomial(3, 0.1) == pytest.approx([0.729, 0.243, 0.027, 0.001])


def test_layer_stall_by_hand():
    """2 picks, each offloaded with share 1/2: k = 0, 1, 2 with 1/4, 1/2, 1/4; an expert's
    copy 1 s, a window of 0.5 s. Exact prefetch: 1/2 x (1 - 0.5) + 1/4 x (2 - 0.5) = 0.625;
    half the misses guessed: + (1 - 0.5) x E[k] x 1 = + 0.5; nothing prefetched: E[k] = 1."""
    exact = LayerLink(miss=0.5, predicted=1.0, window=0.5)
    assert layer_stall(exact, 2, 1.0) == pytest.approx(0.625)
    half = LayerLink(miss=0.5, predicted=0.5, window=0.5)
    assert layer_stall(half, 2, 1.0) == pytest.approx(1.125)
    none = LayerLink(miss=0.5, predicted=None, window=0.5)
    assert layer_stall(none, 2, 1.0) == pytest.approx(1.0)
    wide = LayerLink(miss=0.5, predicted=1.0, window=2.0)  # the window hides every copy
    assert layer_stall(wide, 2, 1.0) == 0.0


def test_estimate_by_hand():
    """A 10 ms step; an expert of 64 MB over a 64 GB/s link: 1 ms a copy. Layer a: exact,
    window 0.5 ms, 0.1 ms of prediction; layer b: guessed at 1/2, window 0.5 ms, 0.2 ms; both
    miss 1/2 of 2 picks. Stalls 0.625 + 1.125 ms; serial 2 x 1 ms; link bytes: a moves
    E[k] = 1 expert, b its guess (1) and half its misses again (0.5): 2.5 x 64 MB."""
    layers = [
        LayerLink(0.5, 1.0, 0.5e-3, predict=0.1e-3),
        LayerLink(0.5, 0.5, 0.5e-3, predict=0.2e-3),
    ]
    e = estimate(10e-3, layers, 2, 64e6, 64e9)
    assert e.compute == pytest.approx(10.3e-3) and e.predictions == pytest.approx(0.3e-3)
    assert e.stall == pytest.approx(1.75e-3) and e.serial == pytest.approx(2e-3)
    assert e.link_bytes == pytest.approx(2.5 * 64e6)
    assert e.tokens_per_s == pytest.approx(1 / 12.05e-3)
    assert e.serial_tokens_per_s == pytest.approx(1 / 12e-3)


def test_the_skew_fit_reproduces_the_quoted_measurements():
    """Issue 26's public V4-Flash measurements: 240-248 of 256 experts live a layer; a
    frequency-pinned cache of 500-900 slots of 11,008 (43 layers: 11.6-20.9 a layer) hits
    40-52 %. The fit: a layer's 12 and 21 hottest within 2 points of 40 % and 52 %."""
    shares = zipf_shares(256)
    assert sum(shares) == pytest.approx(1.0) and shares.count(0.0) == 256 - 248
    assert shares == sorted(shares, reverse=True)
    assert sum(shares[:12]) == pytest.approx(0.40, abs=0.02)
    assert sum(shares[:21]) == pytest.approx(0.52, abs=0.02)
    assert skew_miss(248, 256) == 0.0 and skew_miss(0, 256) == pytest.approx(1.0)
    assert skew_miss(128, 256) < 0.5 * (1 - 128 / 256)  # far below the uniform miss


@pytest.fixture(scope="module")
def flash16():
    """The 16-layer Flash variant (64 experts; 3 hash layers first), 5 experts of 64 kept."""
    spec = load_spec("specs/variants/flash-16l-64e.yaml")
    plan = compile_spec(spec, CompileOptions(max_seq=256, max_draft=0)).plan
    size = max(b for _, b in routed_experts(plan).values())
    layers = len(routed_experts(plan))
    budget = fit(plan, (minimum_bytes(plan, 6) + 5 * layers * size) / GiB, spec.moe.top_k)
    return spec, plan, budget


def test_layers_follow_the_runtime_prefetch(flash16):
    """Every launch 1 s: a window counts the launches between two layers' experts; the
    first (hash) layer is prefetched at the step's start (its gate: 1 s of prediction), the
    next two hash layers exactly, the rest guessed; hash only: the rest not prefetched."""
    _, plan, budget = flash16
    launches = [la for la in plan.entries["decode"].launches if la.kind != "view"]
    seconds = {la.node: 1.0 for la in launches}
    experts = [i for i, la in enumerate(launches) if la.op == "grouped_swiglu"]
    miss = {f"layers.{n}": budget.layers[f"layers.{n}"].miss for n in range(16)}
    links = layer_links(plan, seconds, miss)
    assert len(links) == 16
    assert links[0] == LayerLink(miss["layers.0"], 1.0, float(experts[0]), 1.0)
    for n in range(1, 16):
        p = 1.0 if n < 3 else PREDICTED
        want = LayerLink(miss[f"layers.{n}"], p, float(experts[n] - experts[n - 1] - 1), 2.0)
        assert links[n] == want
    alone = layer_links(plan, seconds, miss, guess=False)
    assert alone[:3] == links[:3]
    assert all(x == LayerLink(miss[f"layers.{n + 3}"], None, 0.0) for n, x in enumerate(alone[3:]))


def test_report_states_serial_as_built_and_hash_only(flash16):
    """The budget section's rows are the model's numbers on the plan at the roofline; a
    hash-only prefetch is never slower than serial (it overlaps and copies nothing wrong),
    and guessing moves more bytes."""
    _, plan, budget = flash16
    text = "\n".join(budget_section(budget, plan))
    assert "uniform (no profile: the worst case)" in text and "skew scenario" in text
    hbm = HBM["H200 (141 GB HBM3e)"][0]
    for link, (bw, _) in LINKS.items():
        found = link_estimates(budget, plan, roofline_seconds(plan, hbm), bw)
        for built, alone in found.values():
            assert alone.stall <= alone.serial and built.link_bytes > alone.link_bytes
        for row in estimate_rows("H200 (141 GB HBM3e) roofline", found, link):
            assert row in text


def test_lens_section_takes_each_launch_at_its_estimate(flash16, tmp_path):
    """`v4c compile --device-gb N --target T`: the lens JSON's batch-1 decode rows (a launch
    of two kernels: two rows of one node) give each launch its seconds; the offloaded step
    is appended to report.md and printed, against those seconds."""
    _, plan, budget = flash16
    launches = [la for la in plan.entries["decode"].launches if la.kind != "view"]
    rows = [{"entry": "decode", "bucket": "B=1,T=1", "node": la.node, "est_us": 4.0}
            for la in launches for _ in range(2)]  # fmt: skip
    rows.append({"entry": "prefill", "bucket": "B=1,T=64", "node": launches[0].node, "est_us": 1e6})
    data = {"target": "sm_90", "card": "H200 SXM", "launches": rows}
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "sm_90.json").write_text(json.dumps(data))
    (tmp_path / "report.md").write_text("# report\n")
    lines = append_lens(budget, plan, tmp_path, ["sm_90"])
    seconds = {la.node: 8e-6 for la in launches}
    built, alone = link_estimates(budget, plan, seconds, LINKS["PCIe 5.0 x16"][0])[
        "uniform (no profile: the worst case)"
    ]
    assert built.compute == pytest.approx(len(launches) * 8e-6 + built.predictions)
    assert (
        f"offloaded decode, sm_90 lens, PCIe 5.0 x16, uniform (no profile: the worst case): "
        f"{built.step * 1e3:.2f} ms a token" in lines[0]
    )
    hash_only = f"hash layers only {alone.step * 1e3:.2f} ms, {alone.tokens_per_s:.0f} tokens/s"
    assert hash_only in lines[0]
    report = (tmp_path / "report.md").read_text()
    assert "## Offloaded decode against the kernel lens: sm_90 on H200 SXM (estimate)" in report
    assert len(lines) == len(LINKS) * 2  # uniform and the skew scenario, each link


def test_guessing_is_chosen_where_it_pays(flash16):
    """With 5 of 64 experts kept, a PCIe 5.0 link (an expert: 0.2 ms, longer than a layer's
    window at the roofline) loses more to wrong guesses than right ones save; a link fast
    enough to hide a copy in the window (2 TB/s) gains. The plan records the PCIe choice."""
    _, plan, budget = flash16
    miss = {name: f.miss for name, f in budget.layers.items()}
    size, hbm = budget.slot_bytes, HBM["H200 (141 GB HBM3e)"][0]
    assert not guess_pays(plan, miss, 6, size, hbm, LINKS["PCIe 5.0 x16"][0])
    assert guess_pays(plan, miss, 6, size, hbm, 2e12)
    assert budget.guess is False and budget.to_plan()["guess"] is False


def test_a_profile_gives_the_misses_and_no_scenario(flash16):
    """With --expert-profile the miss shares are the profile's (the hottest kept), and the
    skew scenario, a stand-in for a missing profile, is not shown beside them."""
    spec, plan, budget = flash16
    profile = ExpertProfile(spec.name)
    for name, (n, _) in routed_experts(plan).items():
        profile.add(name, [1000 if e < 10 else 1 for e in range(n)], tokens=1)
    profiled = fit(plan, budget.budget / GiB, spec.moe.top_k, profile)
    found = scenarios(profiled)
    assert list(found) == ["the profile's"]
    kept = len(profiled.layers["layers.3"].resident)
    assert kept >= 5  # at least the default's share, the 10 hot experts first
    hot = min(kept, 10)  # the hottest 10 first: 1000 picks each, the other 54 one each
    want = (1000 * (10 - hot) + (64 - 10 - (kept - hot))) / (1000 * 10 + 54)
    assert found["the profile's"]["layers.3"] == pytest.approx(want)
    assert list(scenarios(budget)) == ["uniform (no profile: the worst case)", SKEW]
