"""Tensor and expert parallelism over torch.distributed (gloo, CPU): ranks started with
`runtime.launch.spawn`, each reading its pieces of an official-layout checkpoint (FP8
weights, FP4 experts), give the logits and greedy tokens of one process; a failed or
stalled rank ends every rank with one message (the launcher stops the others; a
collective whose peer stalls fails after its timeout).

The oracle is the unsharded plan on the whole checkpoint in this process. One spawned
4-process world serves the three grids and the timeout check (`dist_worker.rank_runs`).
"""

from __future__ import annotations

import time

import pytest
import torch

from tests.runtime import dist_worker, rank_failure
from v4c.compile import compile_spec
from v4c.errors import V4CError
from v4c.runtime.checkpoint import load_checkpoint, write_official
from v4c.runtime.launch import spawn
from v4c.runtime.engine import Engine
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.runtime.sampler import Sampler
from v4c.spec import load_spec

RTOL = 1e-5  # fp32: max |sharded - one process| / max |one process|
GRIDS = [(2, 1), (1, 2), (2, 2)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    spec = load_spec(dist_worker.SPEC)
    out = tmp_path_factory.mktemp("ckpt")
    write_official(out, spec, random_weights(spec, seed=0), shards=2)
    return out


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """The folder of every grid's plan (and, once the ranks ran, of their results)."""
    spec, out = load_spec(dist_worker.SPEC), tmp_path_factory.mktemp("plans")
    for grid in [(1, 1), *GRIDS]:
        plan = compile_spec(spec, dist_worker.options(*grid)).plan
        dist_worker.plan_file(out, grid).write_text(plan.to_json())
    return out


@pytest.fixture(scope="module")
def one_process(folder, plans):
    plan = dist_worker.read_plan(plans, (1, 1))
    _, weights = load_checkpoint(
        folder, load_spec(dist_worker.SPEC), dtype=torch.float32, progress=False,
        names=set(plan.params),
    )  # fmt: skip
    return dist_worker.generate(Engine(plan, weights, dtype=torch.float32), Sampler())


@pytest.fixture(scope="module")
def ranks_out(folder, plans):
    spawn(4, dist_worker.rank_runs, (folder, plans))
    return plans


@pytest.mark.slow
@pytest.mark.parametrize("tp, ep", GRIDS)
def test_ranks_match_one_process(tp, ep, one_process, ranks_out):
    logits, tokens = one_process
    got = torch.load(dist_worker.plan_file(ranks_out, (tp, ep)).with_suffix(".pt"))
    scale = logits.abs().max().item()
    err = (got["logits"] - logits).abs().max().item()
    assert err <= RTOL * scale, f"max abs diff {err:.3g} > {RTOL} x {scale:.3g}"
    assert torch.equal(got["tokens"], tokens)  # greedy, both rows, 1 + 30 steps


@pytest.mark.slow
def test_a_stalled_rank_times_out_the_collective(ranks_out):
    got = torch.load(ranks_out / "timeout.pt")
    assert got["message"].startswith("rank 0: all_reduce failed: another rank ended or did")
    assert f"within {dist_worker.TIMEOUT_S:g} s" in got["message"]
    assert dist_worker.TIMEOUT_S * 0.9 <= got["waited"] < 30


def test_a_failing_rank_ends_every_rank_with_its_message(tmp_path):
    start = time.monotonic()
    with pytest.raises(V4CError) as err:
        spawn(2, rank_failure.failing_rank, (str(tmp_path),))
    assert str(err.value) == f"rank 1: {tmp_path}/missing: no such checkpoint folder"
    assert time.monotonic() - start < 60  # rank 0 would wait 120 s: it was stopped


def test_a_stalled_rank_is_killed_and_the_message_names_the_rank_once(tmp_path, monkeypatch):
    monkeypatch.setattr("v4c.runtime.launch.STOP_GRACE_S", 2.0)
    start = time.monotonic()
    with pytest.raises(V4CError) as err:
        spawn(2, rank_failure.stalling_rank, (str(tmp_path),))
    assert str(err.value) == "rank 0: all_reduce failed: another rank ended or did not answer"
    assert time.monotonic() - start < 60  # rank 1 ignores SIGTERM for 120 s: it was killed
