"""Step schedules for the long-sequence parity tests: decode one token at a time only across
the cache boundaries (a sliding window wrapping, a compressed entry completing) and prefill
everything in between, so a test covers every boundary at the cost of a few decode steps."""

from __future__ import annotations


def around(boundaries: list[int], before: int, after: int) -> list[range]:
    """The positions of each step, in order: a prefill up to `before` tokens ahead of each
    boundary, then one decode step per position up to `after` tokens past it (the token at
    the boundary position starts the new window). The spans tile 0..boundaries[-1] + after."""
    steps, done = [], 0
    for b in boundaries:
        first = b - before
        if not done <= first < b:
            raise ValueError(f"boundary {b}: decode from {first} overlaps the step before")
        if first > done:
            steps.append(range(done, first))
        steps += [range(p, p + 1) for p in range(first, b + after)]
        done = b + after
    return steps
