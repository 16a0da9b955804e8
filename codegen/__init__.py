"""v4c.codegen: Triton kernels rendered from Jinja templates, cached by what went in.

- `templates/<name>.py.j2`: thin Triton source for one op kind (or a few that share it);
  rendered with the constants of one use (dims, block sizes, dtypes, flags) validated by
  that template's parameters, a class in `ops/<family>.py` that names it.
- `kernels/`: the algorithms, plain `@triton.jit` helpers the templates compose.
- `render.py`: the one Jinja environment; `cache.py`: the on-disk kernel cache and import;
  `params.py`: which template computes which op; `jit.py`: a launch's params, rendered,
  cached and imported.

A rendered module defines `run(*inputs, out=None) -> tuple`, the same contract as the op's
reference `run`, so a kernel is tested by calling both on the same inputs. `out` is the bound
program's way to have no allocation in a step: one contiguous tensor per result that is a
buffer of its own (a result that is an operand updated in place, like the compressor's
cache, has none), of the result's shape and dtype; the kernel writes there and returns `out`.
Without it the results are allocated. `run` reads no device value on the host (no `.item()`,
no shape from a tensor's values), so a CUDA graph can capture it.
"""

CODEGEN_VERSION = "1"
