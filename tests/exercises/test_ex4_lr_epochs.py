"""Study 4: what its answer, tables and figures say, read back from its raw table."""

from __future__ import annotations

import pandas as pd

from study.exercises.common import _sig


def test_least_squares_in_the_answers_counts_every_run(quick):
    """Ex. 4's floor is the median over every data stream, diverged SGD runs or not."""
    out, _ = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex4_lr_epochs.parquet")
    last = raw[raw["epoch"] == raw["epoch"].max()]
    assert last["diverged"].any()
    floor = last.drop_duplicates("seed")["ols_w_err_norm"].median()
    assert f"least squares on the same examples ({_sig(floor)} " in (out / "results" / "answers.md").read_text()
