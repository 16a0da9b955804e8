"""A reduction cut into SPLIT ranges, summed in a fixed order: split-K that keeps a row's
result independent of how the work was spread (batch invariance).

Split s's partial is the sum over its range from zero, and the total is
((p_0 + p_1) + p_2) + ... in split order, whether the splits ran in SPLIT programs (a decode
step, to spread a thin GEMM's weights over the SMs: `split_total`) or one after another in
one program (a prefill, where the programs are many already): the same additions either way.
"""

import triton
import triton.language as tl


@triton.jit
def split_total(acc, s, part_ptr, at, on, count_ptr, SPLIT: tl.constexpr, PLANE):
    """Split s's partial acc (any tile shape) of one output tile whose SPLIT splits run in
    SPLIT programs: stored at part_ptr + s * PLANE + at (masked by on); an atomic count per
    output tile at count_ptr (0 before the launch) finds the program that finishes last,
    which sums the SPLIT partials in split order and resets the count for the next launch.
    -> (the total in that program, else acc; whether this program has it)."""
    tl.store(part_ptr + s * PLANE + at, acc, mask=on)
    tl.debug_barrier()  # every thread's partial is written before the count moves
    last = tl.atomic_add(count_ptr, 1, sem="acq_rel") == SPLIT - 1
    total = acc
    if last:
        total = tl.load(part_ptr + at, mask=on, other=0.0, cache_modifier=".cg")
        for t in tl.static_range(1, SPLIT):
            total += tl.load(part_ptr + t * PLANE + at, mask=on, other=0.0, cache_modifier=".cg")
        tl.store(count_ptr, 0)
    return total, last
