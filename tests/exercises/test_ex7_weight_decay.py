"""Study 7: what its answer, tables and figures say, read back from its raw table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.exercises.common import Estimate


def test_study_7_reads_train_and_validation_error_and_the_best_weight_decay_from_the_raw_table(quick):
    from study.summaries import median_ranks

    out, outcomes = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex7_weight_decay.parquet")
    answer = outcomes[7].answer
    last = raw[raw["epoch"] == raw["epoch"].max()]
    assert (raw["num_inputs"] == 200).all() and not any(c.startswith("w_hat_") for c in raw.columns)

    def estimate(rows, column):
        v = np.sort(rows[column].abs().to_numpy())
        low, high = median_ranks(len(v))
        return Estimate(np.median(v), v[low - 1], v[high - 1])

    small = last[(last["num_train"] == 20) & (last["weight_decay"] == 0)]
    assert (
        f"the training loss is {estimate(small, 'train_loss')} and the validation MSE {estimate(small, 'val_mse')}"
    ) in answer
    big = last[last["num_train"] == 1000]
    medians = big.groupby("weight_decay")["w_err_norm"].median()
    assert medians.idxmin() == 0 and "at n = 1,000 weight decay stops helping" in answer
    assert estimate(small, "train_loss").value < 1e-5 < estimate(small, "val_mse").value  # it fits 20 points, not more
