"""McNemar's exact test against hand-computed binomial tails."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fetoolkit.metrics.significance import binom_two_sided_half, mcnemar


def brute(k: int, n: int) -> float:
    k = min(k, n - k)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


@pytest.mark.parametrize("k,n", [(0, 1), (0, 5), (1, 10), (3, 10), (5, 10), (12, 40), (0, 30), (100, 250)])
def test_binomial_tail_matches_exact_sum(k: int, n: int) -> None:
    assert binom_two_sided_half(k, n) == pytest.approx(brute(k, n), rel=1e-9, abs=1e-300)


def test_hand_cases() -> None:
    # b=0, c=6: 2 * (1/2)^6 = 0.03125
    assert binom_two_sided_half(0, 6) == pytest.approx(0.03125)
    assert binom_two_sided_half(0, 0) == 1.0


def test_mcnemar_counts_discordant_pairs() -> None:
    base = np.array([1, 1, 1, 0, 0, 1, 1], bool)
    cand = np.array([1, 0, 0, 1, 0, 1, 0], bool)
    r = mcnemar(base, cand)
    assert (r.n_worse, r.n_better) == (3, 1)
    assert r.p_value == pytest.approx(brute(1, 4))


def test_large_shift_is_significant_and_none_is_not() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(80_000) > 0.01
    same = mcnemar(base, base.copy())
    assert same.p_value == 1.0 and same.n_worse == 0
    worse = base.copy()
    worse[np.flatnonzero(base)[:200]] = False
    assert mcnemar(base, worse).p_value < 1e-50


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        mcnemar(np.ones(3, bool), np.ones(4, bool))
