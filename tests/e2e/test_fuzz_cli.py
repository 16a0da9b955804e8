"""Hypothesis fuzz of `v4c run`'s options, parsed by the real command (click's parser and
the option callbacks) without running a model.

The oracle is the range each option's `--help` states: a value inside it parses and the
sampler accepts it (and samples valid ids from a finite distribution); a value outside it is
a usage error naming the option (exit 2, no traceback). Random argument lists either parse
or are usage errors, never another exception.
"""

from __future__ import annotations

import math

import pytest
import torch
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from typer.exceptions import TyperException

from v4c.cli import app, main
from v4c.runtime.sampler import Sampler

RUN = typer.main.get_command(app).commands["run"]
VOCAB = 50
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

reals = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2, max_value=3),
    st.sampled_from([0.0, 1.0, -0.0, 1e-300, 1.0000001]),
)
ints = st.one_of(st.integers(-5, 200), st.integers(), st.just(2**64))


def parse(args: list[str]) -> dict:
    return RUN.make_context("run", ["--prompt", "Hi", *args]).params


def in_documented_range(option: str, value) -> bool:
    return {
        "--temperature": lambda v: math.isfinite(v) and v >= 0,
        "--top-p": lambda v: math.isfinite(v) and 0 < v <= 1,
        "--top-k": lambda v: v >= 0,
        "--seed": lambda v: 0 <= v < 2**64,
        "--max-new-tokens": lambda v: v >= 1,
    }[option](value)


@FUZZ
@given(
    st.sampled_from(["--temperature", "--top-p"]).flatmap(lambda o: st.tuples(st.just(o), reals))
    | st.sampled_from(["--top-k", "--seed", "--max-new-tokens"]).flatmap(
        lambda o: st.tuples(st.just(o), ints)
    )
)
def test_a_sampling_value_parses_exactly_when_help_allows_it(option_value):
    option, value = option_value
    try:
        params = parse([option, repr(value) if isinstance(value, float) else str(value)])
    except typer.BadParameter as err:
        assert not in_documented_range(option, value)
        assert err.param is not None and option in err.param.opts, err
        return
    assert in_documented_range(option, value), (option, value)
    sampler = Sampler(
        temperature=params["temperature"],
        top_k=params["top_k"],
        top_p=params["top_p"],
        seed=params["seed"],
    )
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(0))
    ids = sampler.sample(logits)
    assert ids.shape == (2,) and bool(((ids >= 0) & (ids < VOCAB)).all())
    if sampler.temperature > 0:
        probs = sampler.probabilities(logits)
        assert bool(torch.isfinite(probs).all()) and torch.allclose(probs.sum(-1), torch.ones(2))


OPTIONS = ["--temperature", "--top-p", "--top-k", "--seed", "--max-new-tokens", "--max-seq",
           "--threads", "--device", "--backend", "--numerics", "--checkpoint", "--spec",
           "--chat", "--raw", "--thinking", "--no-thinking", "--bogus", "-x", "--"]  # fmt: skip
WORDS = st.one_of(
    st.sampled_from(OPTIONS),
    st.text(max_size=8),
    st.integers().map(str),
    st.floats().map(repr),
)


@FUZZ
@given(st.lists(WORDS, max_size=8))
def test_random_run_arguments_parse_or_are_usage_errors(words):
    try:
        parse([w for w in words if "\0" not in w])
    except TyperException as err:  # click's usage errors: a message and exit code 2
        assert getattr(err, "exit_code", None) == 2, err


@pytest.mark.parametrize("args", [["--top-p", "0"], ["--temperature", "nan"], ["--seed", "-3"]])
def test_the_entry_point_exits_2_on_a_bad_value(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--prompt", "Hi", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert args[0] in err and "Traceback" not in err
