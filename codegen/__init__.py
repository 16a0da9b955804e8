"""v4c.codegen: Triton kernels from Jinja templates.

Will hold `templates/*.py.j2`, the `@triton.jit` helpers they compose (`kernels/`), the
renderer and the kernel cache (issue: codegen).
"""
