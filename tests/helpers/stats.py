"""Chi-square goodness of fit for the sampling tests: counts against a distribution.

At a fixed seed each test is deterministic; a correct sampler exceeds the alpha = 0.001
critical value 1 time in 1000, a wrong one (a few percent off a cell, at the sample sizes
used) far more often than not."""

from __future__ import annotations

# chi-square critical values at alpha = 0.001 by degrees of freedom (standard tables)
CHI2_999 = {
    1: 10.828,
    2: 13.816,
    3: 16.266,
    4: 18.467,
    5: 20.515,
    6: 22.458,
    7: 24.322,
    8: 26.124,
    9: 27.877,
    10: 29.588,
}


def chi_square(counts: list[int], expected: list[float]) -> tuple[float, int]:
    """(statistic, degrees of freedom) of `counts` against probabilities `expected` over the
    cells with expected > 0; a count in a cell of probability 0 is an AssertionError."""
    stray = [i for i, (c, e) in enumerate(zip(counts, expected)) if e == 0 and c]
    assert not stray, f"draws in cells of probability 0: {stray} ({counts})"
    n = sum(counts)
    cells = [(c, n * e) for c, e in zip(counts, expected) if e > 0]
    return sum((c - m) ** 2 / m for c, m in cells), len(cells) - 1


def assert_fits(counts: list[int], expected: list[float]) -> None:
    """The counts pass the alpha = 0.001 chi-square test against `expected`."""
    stat, dof = chi_square(counts, expected)
    assert stat < CHI2_999[dof], (stat, dof, counts, expected)
