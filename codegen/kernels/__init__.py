"""The algorithms the templates compose: plain `@triton.jit` helpers, importable and
testable on their own. Importing a module here imports triton."""
