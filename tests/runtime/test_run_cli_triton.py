"""`v4c run --backend triton` as a user runs it, in Triton's interpreter on a CPU: the kernels
compute the official roundings, so greedy gives the torch backend's tokens. Apart from
test_run_cli.py so that pytest-xdist (--dist loadfile) runs it beside that file's runs.

The default run uses the tiny model's layers and official formats with a 1024-token
vocabulary (tests/small_vocab.py, passed as --checkpoint): at the default model's 129280
tokens the interpreter spends most of the run in the lm_head (2020 programs, not 16), and no
kernel, format or rounding depends on the vocabulary's size ("The" is token 671)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.runtime.test_run_cli import v4c
from tests.small_vocab import small_vocab
from v4c.envs import CACHE_DIR
from v4c.runtime.checkpoint import TINY_SHARDS, write_official
from v4c.runtime.checkpoint.random_weights import random_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, CACHE_DIR: str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small-vocabulary tiny model written as make_tiny writes the default one."""
    spec, folder = small_vocab(), tmp_path_factory.mktemp("small") / "tiny"
    write_official(folder, spec, random_weights(spec, seed=0), shards=TINY_SHARDS)
    return ("--checkpoint", str(folder))


@pytest.mark.parametrize(
    "model, tokens",
    [
        ("small", 1),  # the prefill alone
        pytest.param("default", 1, marks=pytest.mark.long),  # the embedded model, as is
        pytest.param("default", 3, marks=pytest.mark.long),  # decode steps too
    ],
)  # the default model: minutes in the interpreter on 2 cores
def test_triton_backend_on_an_official_model(env, request, model, tokens):
    """`--backend triton` on an official-format model (numerics official): the same greedy
    tokens as `--backend torch`."""
    where = request.getfixturevalue("small") if model == "small" else ()
    args = ("run", "--prompt", "The", "--raw", "--temperature", "0", "--max-new-tokens",
            str(tokens), "--speculative", "off", "--max-seq", "64", *where)  # fmt: skip
    tri = subprocess.run(
        [sys.executable, "-m", "v4c", *args, "--backend", "triton"], capture_output=True,
        text=True, env={**env, "TRITON_INTERPRET": "1"}, timeout=1200,
    )  # fmt: skip
    assert tri.returncode == 0, tri.stderr
    assert "backend triton (--backend); numerics official" in tri.stderr
    assert f"{tokens} new (length)" in tri.stderr
    ref = v4c(env, *args, "--backend", "torch")
    assert ref.returncode == 0, ref.stderr
    assert tri.stdout == ref.stdout and tri.stdout.strip()
