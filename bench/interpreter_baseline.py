"""The decode figures of the plan *interpreter* that the bound program replaced (commit
373b0f1), measured the way `v4c bench` measures the program, for BENCHMARKS.md:

    git worktree add /tmp/v4c-373b0f1 373b0f1 && cd /tmp/v4c-373b0f1 && pip install -e . \
        && python /path/to/v4c/bench/interpreter_baseline.py

It times `Engine.forward` of one token after a 64-token prompt (tiny model, random weights,
fp32, CPU, torch backend) and splits a step into the time inside the ops and the rest (the
interpreter's own dispatch: operand lookups, dict writes), per launch.
"""

from __future__ import annotations

import time

import torch


def main() -> None:
    from v4c.compile import compile_spec
    from v4c.passes.base import CompileOptions
    from v4c.runtime.engine import Engine
    from v4c.runtime.checkpoint.random_weights import random_weights
    from v4c.spec import load_spec

    spec = load_spec("tiny")
    options = CompileOptions(max_batch=1, max_tokens=64, max_seq=160)
    engine = Engine(compile_spec(spec, options).plan, random_weights(spec), dtype=torch.float32)
    engine.reset(1)
    prompt = torch.randint(0, spec.vocab_size, (64,), generator=torch.Generator().manual_seed(0))
    engine.forward([prompt.tolist()])
    executor, inside = engine.executor, [0.0]
    call = executor._call

    def timed(*args):
        start = time.perf_counter()
        out = call(*args)
        inside[0] += time.perf_counter() - start
        return out

    walls, insides = [], []
    for _ in range(32):
        inside[0] = 0.0
        executor._call = call
        start = time.perf_counter()
        engine.forward([[5]])
        walls.append(time.perf_counter() - start)
        executor._call = timed
        engine.forward([[5]])
        insides.append(inside[0])
    launches = len(executor.ops)
    wall, op_time = min(walls), min(insides)
    print(f"interpreter: {launches} launches/step, decode {wall * 1e3:.2f} ms/step, "
          f"host dispatch {(wall - op_time) * 1e3:.3f} ms/step = "
          f"{(wall - op_time) / launches * 1e6:.1f} us/launch")  # fmt: skip


if __name__ == "__main__":
    main()
