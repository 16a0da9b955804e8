"""The tiny spec with a small vocabulary, for the tests that run the tiny model's kernels in
the Triton interpreter. At the real 129280 tokens the interpreter spends most of a tiny step
in the lm_head (2020 programs of 64 vocabulary rows a decode step; the GEMMs were 85 % of a
step, measured), and no cache boundary, routing decision, template or stored format depends
on the vocabulary's size."""

from __future__ import annotations

from v4c.spec import ModelSpec, load_spec
from v4c.spec.load import spec_from_data

VOCAB = 1024  # 16 lm_head programs a decode step, above every token id the tests feed


def small_vocab() -> ModelSpec:
    data = {**load_spec("tiny").model_dump(), "vocab_size": VOCAB}
    return spec_from_data({**data, "name": "deepseek-v4-tiny-1k-vocab"})
