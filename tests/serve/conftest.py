"""Fixtures of the serve tests: the tokenizer, and the tiny model served once a session."""

from __future__ import annotations

import pytest
import torch

from tests.serve.scripted import serving


@pytest.fixture(scope="session")
def tok():
    from v4c.runtime.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_server(tok):
    """The tiny spec with random weights (fp32, torch backend) and 32 cache rows."""
    from v4c.compile import compile_spec
    from v4c.passes.base import CompileOptions
    from v4c.runtime.checkpoint.random_weights import random_weights
    from v4c.runtime.engine import Engine
    from v4c.spec import load_spec

    spec = load_spec("tiny")
    options = CompileOptions(max_batch=32, max_tokens=64, max_seq=256, weights="bf16",
                             dtype="fp32", max_draft=0)  # fmt: skip
    engine = Engine(compile_spec(spec, options).plan, random_weights(spec, seed=0),
                    dtype=torch.float32)  # fmt: skip
    with serving(engine, tok, name="tiny", prefill_chunk=64) as server:
        yield server
