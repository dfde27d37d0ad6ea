"""Study 1: what its answer, tables and figures say, read back from its raw table."""

from __future__ import annotations

import pandas as pd


def test_ex1_quick_best_lr_ratio_is_the_batch_size_within_the_grid_step(quick):
    out, _ = quick
    best = pd.read_csv(out / "results" / "ex1_best_lr.csv").set_index("reduction")
    ratio = best.loc["mean", "smallest_diverging_lr"] / best.loc["sum", "smallest_diverging_lr"]
    assert 32 / 1.8 <= ratio <= 32 * 1.8  # lrs are 10^(1/4) apart
