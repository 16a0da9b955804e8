"""A step over a subset of the sequences reads and writes their cache rows in place
(`slots`), through the compiled plan (torch backend, tiny model, fp32).

Rows 0 and 2 of 3 advance together (a prefill, then a chunk after it) while row 1 is at
another length, then row 1 decodes alone. The oracle is an engine that holds only sequences
0 and 2 and runs the same steps (the same step shapes, so the same arithmetic): logits and
caches must be bit-identical. The rows a step leaves out must not change by a bit.
"""

from __future__ import annotations

import torch

from v4c.compile import compile_spec
from v4c.passes.base import CompileOptions
from v4c.runtime.engine import Engine
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.spec import load_spec


def test_sub_batch_steps_use_their_rows_in_place():
    spec = load_spec("tiny")
    weights = random_weights(spec, seed=5)
    plan = compile_spec(
        spec, CompileOptions(max_batch=3, max_tokens=16, max_seq=64, weights="bf16", dtype="fp32")
    ).plan
    engines = [Engine(plan, weights, dtype=torch.float32) for _ in range(2)]
    three, two = engines
    three.reset(3)
    two.reset(2)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, spec.vocab_size, (n,), generator=gen).tolist() for n in (7, 12, 7)]
    more = [torch.randint(0, spec.vocab_size, (5,), generator=gen).tolist() for _ in range(3)]

    first = three.forward(prompts)  # two steps: rows [0, 2] (slots [0, 2]), then row 1
    assert torch.equal(first[[0, 2]], two.forward([prompts[0], prompts[2]]))
    waiting = {key: value[1].clone() for key, value in three.state.items()}
    got = three.forward([more[0], [], more[2]])  # one step, slots [0, 2]
    want = two.forward([more[0], more[2]])
    assert torch.isnan(got[1]).all() and three.lengths == [12, 12, 12]
    assert torch.equal(got[[0, 2]], want)
    for key, value in three.state.items():
        assert torch.equal(value[[0, 2]], two.state[key][:2]), key  # (caches hold max_batch)
        assert torch.equal(value[1], waiting[key]), key

    others = {key: value[[0, 2]].clone() for key, value in three.state.items()}
    decoded = three.forward([[], [more[1][0]], []])  # a decode step of row 1 alone, slots [1]
    assert decoded[1].isfinite().all() and three.lengths == [12, 13, 12]
    for key, value in three.state.items():
        assert torch.equal(value[[0, 2]], others[key]), key
    assert not torch.equal(three.state["L00.window"][1], waiting["L00.window"])  # written
