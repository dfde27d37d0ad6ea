"""Power-law fits: one unit per data stream, three sizes at least, intervals that cover."""

from __future__ import annotations

import numpy as np
import pytest

from study.fits import fit_power_law


def test_fit_power_law_counts_each_data_stream_once():
    """The exercise-5 bug: a least-squares error repeated for 3 lrs (the same data) is one
    observation. Counted 3 times, the bootstrap interval shrinks by about sqrt(3)."""
    rng = np.random.default_rng(3)
    x = np.repeat([10, 100, 1000, 10000], 8)
    y = x**-0.5 * np.exp(rng.normal(0, 0.4, len(x)))
    seed = np.arange(len(x))
    once = fit_power_law(x, y, units=seed)
    thrice = fit_power_law(np.tile(x, 3), np.tile(y, 3), units=np.tile(seed, 3))
    naive = fit_power_law(np.tile(x, 3), np.tile(y, 3))
    assert (thrice.slope, thrice.low, thrice.high) == (once.slope, once.low, once.high)
    assert once.units == 32 and once.levels == 4 and naive.units == 96
    assert (naive.high - naive.low) < 0.75 * (once.high - once.low)
    with pytest.raises(ValueError, match="a unit .* must have one x"):
        fit_power_law([10, 100], [1.0, 2.0], units=[1, 1])


def test_fit_power_law_needs_three_sizes_and_reads_its_sign():
    with pytest.raises(ValueError, match=r"at 3 distinct x or more; got x levels \[1000\.0, 2000\.0\]"):
        fit_power_law([1000, 1000, 2000, 2000], [1.0, 1.1, 0.9, 1.0])
    x = np.repeat([10, 100, 1000], 5)
    assert fit_power_law(x, x**-0.5).trend("n").startswith("falls as n^-0.50 (95% interval")
    assert fit_power_law(x, x**0.2).trend("n").startswith("rises as n^0.20")
    noisy = fit_power_law(x, np.exp(np.random.default_rng(0).normal(0, 1, len(x))))
    assert noisy.low < 0 < noisy.high and noisy.trend("n").startswith("shows no clear trend in n (slope")


def test_power_law_bootstrap_interval_covers_the_truth_and_shrinks_with_data():
    """Lognormal scatter around 3·x^-1/2: the slope is found, its 95% interval holds -1/2, and
    four times the runs per level halve the interval's width (within the bootstrap's noise)."""
    rng = np.random.default_rng(1)
    levels = np.array([5, 10, 20, 50, 100, 200, 500, 1000])
    widths = []
    for per_level in (25, 100):
        x = np.repeat(levels, per_level)
        fit = fit_power_law(x, 3.0 * x**-0.5 * np.exp(rng.normal(0, 0.3, len(x))), n_boot=2000)
        assert fit.low < -0.5 < fit.high and abs(fit.slope + 0.5) < 0.05
        widths.append(fit.high - fit.low)
    assert 0.35 < widths[1] / widths[0] < 0.7
