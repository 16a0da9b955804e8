"""The reference semantics of the V4 ops: plain torch, fp32 arithmetic, one function per op.

These functions are the executable definition of each op (V4_REFERENCE.md §2-§11). The op
registry (`v4c.ir.ops`) points each op at one of them; the reference executor runs them node
by node, and every pass and kernel is tested against them.

Conventions:
- Shape legend: B batch rows, T tokens of this step per row, D hidden, H heads, d head dim,
  r rope dim, n HC streams, E routed experts, K top-k, I expert width, C compressed entries,
  W sliding window, m compress ratio, c compressor width, V vocabulary.
- `positions` is an int64 [B, T] tensor of absolute token positions; each row is contiguous
  (start_b, start_b + 1, ...), rows may start at different positions.
- Arithmetic is fp32; a function returns its main output in the dtype of its main input.
- Caches are explicit arguments, mutated in place and documented per function; a function
  never allocates state of its own.
"""
