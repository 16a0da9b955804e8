"""v4c.codegen: Triton kernels rendered from Jinja templates, cached by what went in.

- `templates/<name>.py.j2`: thin Triton source for one op kind; rendered with the constants
  of one use (dims, block sizes, dtypes, flags) validated by that template's `Params`.
- `kernels/`: the algorithms, plain `@triton.jit` helpers the templates compose.
- `render.py`: the one Jinja environment; `cache.py`: the on-disk kernel cache and import;
  `registry.py`: which template computes which op, and its params from a plan launch.

A rendered module defines `run(*inputs) -> tuple`, the same contract as the op's reference
`run`, so a kernel is tested by calling both on the same inputs.
"""

CODEGEN_VERSION = "1"
