"""`v4c run` and `v4c chat` as a user runs them, on the embedded tiny model (made once per
test session in a temporary cache folder, as on a fresh machine)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from v4c.envs import CACHE_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A cache folder of its own: the first run makes the tiny checkpoint, as on a fresh machine."""
    return {**os.environ, CACHE_DIR: str(tmp_path_factory.mktemp("cache"))}


def v4c(env, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "v4c", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=300,
    )


# sampled: speculation off, so that ranks (which do not draft yet) draw the same tokens
HELLO = ("run", "--prompt", "Hello", "--max-new-tokens", "6", "--seed", "3", "--speculative", "off")


@pytest.fixture(scope="module")
def hello(env):
    """The first run in the fresh cache (it makes the tiny checkpoint)."""
    return v4c(env, *HELLO)


def test_run_with_no_arguments_but_the_prompt(env, hello):
    out = hello
    assert out.returncode == 0, out.stderr
    assert "making the tiny default checkpoint" in out.stderr
    assert "[" in out.stderr and "6 new (length)" in out.stderr and "tokens/s" in out.stderr
    assert out.stdout.strip()  # streamed text
    again = v4c(env, *HELLO)
    assert again.stdout == out.stdout  # same seed, same text; the checkpoint is reused
    assert "making the tiny" not in again.stderr


def test_greedy_raw_mode(env):
    a = v4c(env, "run", "--prompt", "The", "--raw", "--temperature", "0", "--max-new-tokens", "4")
    b = v4c(
        env,
        "run",
        "--prompt",
        "The",
        "--raw",
        "--temperature",
        "0",
        "--max-new-tokens",
        "4",
        "--seed",
        "9",
    )
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout  # greedy ignores the seed
    assert "3 prompt tokens" in a.stderr or "2 prompt tokens" in a.stderr  # BOS + the text


def test_chat_feeds_only_new_tokens(env):
    out = v4c(env, "chat", "--max-new-tokens", "3", "--seed", "0", stdin="Hi\nAgain\n\n")
    assert out.returncode == 0, out.stderr
    counts = [
        int(line.split(" prompt tokens")[0].rsplit("[", 1)[1])
        for line in out.stderr.splitlines()
        if "prompt tokens" in line
    ]
    assert len(counts) == 2
    assert counts[1] < counts[0] + 3 + 5  # the second turn does not re-feed the first


@pytest.mark.parametrize(
    "args, message",
    [
        (("--checkpoint", "/nonexistent"), "error: --checkpoint: /nonexistent: no such checkpoint"),
        (("--temperature", "-1"), "Invalid value for '--temperature'"),
        (("--numerics", "exact"), "error: --numerics: expected official or plain"),
        (("--top-p", "0"), "Invalid value for '--top-p': must be a number in (0, 1], got 0.0"),
        (("--speculative", "eagle"), "'--speculative': expected auto, mtp or off"),
        (("--tp", "4"), "error: --tp 4 --ep 1: attention.o_groups (2) is not divisible by tp"),
    ],
)
def test_bad_input(env, args, message):
    out = v4c(env, "run", "--prompt", "x", *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_speculation_is_on_by_default_and_changes_no_token(env):
    """The tiny checkpoint has the MTP block: `run` drafts with it while it pays (`auto`, said
    at start, acceptance in the summary) and prints the text `--speculative off` prints; so
    does `mtp`, which speculates to the end (K = 3: chained drafts)."""
    greedy = ("run", "--prompt", "Hi", "--temperature", "0", "--max-new-tokens", "6")
    on = v4c(env, *greedy, "--draft-tokens", "2")
    off = v4c(env, *greedy, "--speculative", "off")
    assert on.returncode == off.returncode == 0, on.stderr + off.stderr
    assert on.stdout == off.stdout
    said = "speculative auto: while it pays, 2 draft tokens (the plan drafts with the MTP block)"
    assert said in on.stderr
    assert "drafts accepted" in on.stderr and "tokens per main-model step" in on.stderr
    assert "speculative off (--speculative)" in off.stderr and "drafts" not in off.stderr
    forced = v4c(env, *greedy, "--speculative", "mtp", "--draft-tokens", "3")
    assert forced.returncode == 0 and forced.stdout == off.stdout, forced.stderr
    assert "speculative mtp, 3 draft tokens (--speculative)" in forced.stderr
    assert "drafts accepted" in forced.stderr and "speculation off" not in forced.stderr


def test_run_a_compiled_plan_as_it_is(env, tmp_path):
    """`v4c compile` then `v4c run --plan`: the same greedy tokens as `v4c run` compiling
    for itself (same limits, numerics and formats), and a plan of another spec is refused."""
    greedy = (
        "--prompt",
        "Hi",
        "--temperature",
        "0",
        "--max-new-tokens",
        "5",
        "--numerics",
        "plain",
    )
    compiled = v4c(
        env, "compile", "tiny", "-o", str(tmp_path / "plan"), "--dtype", "fp32",
        "--weights", "bf16", "--max-tokens", "512", "--max-seq", "4096",
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    planned = v4c(env, "run", "--plan", str(tmp_path / "plan"), *greedy[:-2])
    itself = v4c(env, "run", *greedy)
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout == itself.stdout and planned.stdout.strip()
    other = tmp_path / "other.yaml"
    other.write_text("extends: tiny.yaml\nname: other\nhidden_size: 128\n")
    v4c(env, "compile", str(other), "-o", str(tmp_path / "other"))
    refused = v4c(env, "run", "--plan", str(tmp_path / "other"), "--prompt", "Hi")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "the plan is for other, not the embedded tiny model; pass --checkpoint" in refused.stderr
    assert "or --random-weights to run it with random ones" in refused.stderr
    random = v4c(env, "run", "--plan", str(tmp_path / "other"), "--random-weights", *greedy)
    assert random.returncode == 0 and " 5 new (length)" in random.stderr, random.stderr
    assert "making a random-weights other checkpoint" in random.stderr
    tiny = os.path.join(env[CACHE_DIR], "checkpoints", "tiny-seed0")
    refused = v4c(
        env, "run", "--plan", str(tmp_path / "other"), "--prompt", "Hi", "--checkpoint", tiny
    )
    assert refused.returncode == 2 and "hidden_size" in refused.stderr, refused.stderr


def test_two_ranks_say_what_one_process_says(env, hello):
    """`v4c run --tp 2` starts its ranks (gloo), each reads its pieces of the checkpoint;
    rank 0 alone prints, and samples: the same seed gives the same text."""
    out = v4c(env, *HELLO, "--tp", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout == hello.stdout and out.stdout.strip()
    assert out.stderr.count("starting 2 ranks (tp=2 x ep=1) here") == 1
    assert out.stderr.count("2 ranks: tp=2 x ep=1 over torch.distributed (gloo)") == 1
    assert out.stderr.count("6 new (length)") == 1  # one rank's summary, not two
