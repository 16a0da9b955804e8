"""`v4c bench --compare hf` decodes transformers' model with its own cache (`HfDecoder`):
the cache must be the one transformers hands back under this version's keyword, or every
step would silently recompute from nothing (and the figures compare the wrong thing), and
the installed transformers (any >= 5.17; the newest in CI) must not warn about it."""

from __future__ import annotations

import warnings

import pytest
import torch

from v4c.bench_compare import HfDecoder, hf_model
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.spec import load_spec

pytest.importorskip("transformers.models.deepseek_v4")

# fp32 throughout; the cached and the whole-sequence forward sum the same terms in other
# orders, so logits of size O(1) differ by a few ulp times the depth: 1e-4 is far above that
# (1.7e-6 seen) and far below what a missing or stale cache changes (O(1))
ATOL, RTOL = 1e-4, 1e-4


def test_the_decode_steps_read_transformers_cache_and_nothing_warns():
    spec = load_spec("tiny")
    model = hf_model(spec, random_weights(spec, seed=4), device="cpu", dtype=torch.float32)
    ids = torch.randint(0, spec.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as seen, torch.no_grad():
        warnings.simplefilter("always")
        decoder = HfDecoder(model)
        got = [decoder.prefill(ids[:, :6])] + [decoder.step(ids[:, t : t + 1]) for t in (6, 7, 8)]
        whole = model(ids).logits
        alone = model(ids[:, 6:7]).logits[:, -1]  # token 6 with no context
    for t, logits in zip((5, 6, 7, 8), got):
        torch.testing.assert_close(logits, whole[:, t], atol=ATOL, rtol=RTOL)
    assert (got[1] - alone).abs().max() > 1e-2  # the context came from the cache
    from_transformers = [w for w in seen if "transformers" in w.filename]
    assert not from_transformers, [str(w.message) for w in from_transformers]
