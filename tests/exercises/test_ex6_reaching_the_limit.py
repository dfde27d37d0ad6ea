"""Study 6: what its answer, tables and figures say, read back from its raw table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.exercises.common import Estimate


def test_study_6_compares_each_way_of_training_with_least_squares_on_the_same_data(quick):
    """Its ratios are the medians of the run-by-run ratios SGD / least squares, with their
    order statistics, from the raw table; the tail average is compared with Polyak-Juditsky in
    the issue's two cases (n = 1,000, lr 0.1, epoch 20, from epoch 2; n = 10,000, lr 0.03,
    epoch 2, from epoch 1)."""
    from study.summaries import median_ranks

    out, outcomes = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex6_reaching_the_limit.parquet")
    answer = outcomes[6].answer

    def ratio(n, lr, epoch, average):
        rows = raw[
            (raw["num_train"] == n)
            & (raw["lr"] == lr)
            & (raw["epoch"] == epoch)
            & (raw["lr_decay"] == 0)
            & (raw["average_from"] == average)
        ]
        ratios = np.sort((rows["w_err_norm"] / rows["ols_w_err_norm"]).to_numpy())
        low, high = median_ranks(len(ratios))
        return Estimate(np.median(ratios), ratios[low - 1], ratios[high - 1])

    last = int(raw["epoch"].max())
    for n in sorted(raw["num_train"].unique()):
        for lr in sorted(raw["lr"].unique()):
            assert f"n = {n:,}, lr {lr:g}: constant lr ×{ratio(n, lr, last, 'none')}" in answer
    for n, lr, epoch, average in ((1000, 0.1, 20, "2"), (10000, 0.03, 2, "1")):
        assert (
            f"at n = {n:,}, lr {lr:g}, after {epoch} epochs, the average after epoch {average} is "
            f"×{ratio(n, lr, epoch, average)}"
        ) in answer
        assert f"the last iterate ×{ratio(n, lr, epoch, 'none')}" in answer
    assert "Polyak and Juditsky" in answer and "average from the first step" in answer
    assert "short of ±15%" in answer  # 6 replicates: a preview, and it says so
