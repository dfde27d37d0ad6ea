"""Estimates with their precision: intervals over independent data streams, in the answers' words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.exercises.common import Estimate, _estimate, _ratio, _sig


def test_an_estimate_claims_a_difference_only_where_its_interval_excludes_one():
    assert Estimate(2.94, 2.8, 3.1).factor() == "×2.9 [2.8, 3.1]"
    assert Estimate(1.003, 0.99, 1.06).factor() == "×1.0 [0.99, 1.1] (no clear difference)"
    assert Estimate(0.82, 0.78, 0.85).clear() and not Estimate(0.9, 0.8, 1.0).clear()
    assert str(Estimate(0.0004, 0.00033, 0.000401)) == "0.00040 [0.00033, 0.00040]"
    assert str(Estimate(3.0, np.nan, np.nan)) == "3.0 (too few runs for an interval)"
    assert str(Estimate(3.7312, 3.7201, 3.7425)) == "3.73 [3.72, 3.74]"  # digits enough to show the width
    assert Estimate(5.0, 2.0, np.inf).factor() == "×5.0 [2.0, inf]"  # diverged runs: an infinite ratio bounds it
    assert Estimate(5.0, np.nan, np.nan).factor() == "×5.0 (too few runs for an interval)"
    assert [_sig(v) for v in (0.1996, 230.4, 1.0, 0.03)] == ["0.20", "230", "1.0", "0.030"]


def test_a_paired_ratio_is_the_median_of_each_runs_own_ratio_with_order_statistics():
    """Epoch 2 over epoch 1, run by run: the median of 40 ratios and the 14th and 27th of them
    (median_ranks(40)); a run that diverged by epoch 2 counts as an infinite ratio."""
    from study.analysis import open_table
    from study.summaries import median_ranks

    rng = np.random.default_rng(3)
    n = 40
    first, second = rng.lognormal(0, 1, n), rng.lognormal(-1, 1, n)
    frame = pd.DataFrame(
        {
            "num_train": 10,
            "lr": 0.1,
            "loss": "squared",
            "sigma": 1.0,
            "reduction": "mean",
            "batch_size": 32,
            "noise": 0.01,
            "noise_kind": "gaussian",
            "epoch": np.repeat([1, 2], n),
            "replicate": np.tile(np.arange(n), 2),
            "seed": np.tile(np.arange(n) + 100, 2),
            "w_err_norm": np.concatenate([first, second]),
            "b_err": 0.0,
            "diverged": False,
        }
    )
    frame.loc[(frame["epoch"] == 2) & (frame["replicate"] == 0), ["w_err_norm", "diverged"]] = [np.nan, True]
    t = open_table(frame.sample(frac=1, random_state=0))  # the rows' order does not pair them
    got = _ratio(t.select({"epoch": [2]}), t.select({"epoch": [1]}), "w_err_norm")
    ratios = np.sort(np.where(np.arange(n) == 0, np.inf, second / first))
    low, high = median_ranks(n)
    assert (got.value, got.low, got.high) == (np.median(ratios), ratios[low - 1], ratios[high - 1])


def test_an_estimate_over_runs_that_share_a_stream_counts_each_stream_once():
    """At the start every lr of a data set holds the same numbers: 3 lrs × 20 streams are 20
    independent units, and the interval is that of the 20 values (median_ranks(20))."""
    from study.analysis import open_table
    from study.summaries import median_ranks

    values = np.random.default_rng(4).lognormal(0, 1, 20)
    frame = pd.DataFrame(
        {
            "num_train": 10,
            "lr": np.repeat([0.01, 0.1, 1.0], 20),
            "loss": "squared",
            "sigma": 1.0,
            "reduction": "mean",
            "batch_size": 32,
            "noise": 0.01,
            "noise_kind": "gaussian",
            "epoch": 0,
            "replicate": np.tile(np.arange(20), 3),
            "seed": np.tile(np.arange(20), 3),
            "w_err_norm": np.tile(values, 3),
            "b_err": 0.0,
            "diverged": False,
        }
    )
    got = _estimate(open_table(frame), "w_err_norm", per_stream=True)
    low, high = median_ranks(20)
    ordered = np.sort(values)
    assert (got.value, got.low, got.high) == (np.median(values), ordered[low - 1], ordered[high - 1])
    assert _estimate(open_table(frame), "w_err_norm").high < got.high  # counted 60 times, it would be too narrow
