from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.grid import Grid
from study.results import read_results, summarize, write_csv
from study.runner import run_grid


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    grid = Grid(num_train=[10, 100], lr=[0.03, 0.1], epoch=[1, 2], replicates=5, num_val=20)
    return run_grid(grid, n_jobs=1, progress=False)


def test_summarize_counts_and_known_quantiles():
    df = pd.DataFrame({
        **{a: v for a, v in dict(num_train=10, lr=0.1, epoch=1, loss="squared", sigma=1.0, reduction="mean",
                                 batch_size=32, noise=0.01, noise_kind="gaussian").items()},
        "replicate": range(11), "seed": range(11),
        "w_err_norm": np.arange(11.0), "b_err": -np.arange(11.0), "ols_w_err_norm": 1.0, "ols_b_err": 2.0,
        "gap_w_norm": 3.0, "val_mse": 4.0, "diverged": False,
    })
    s = summarize(df)
    assert len(s) == 1 and s.loc[0, "count"] == 11 and s.loc[0, "diverged"] == 0
    assert s.loc[0, "w_err_norm_median"] == 5.0 and s.loc[0, "w_err_norm_mean"] == 5.0
    assert s.loc[0, "w_err_norm_q10"] == pytest.approx(1.0) and s.loc[0, "w_err_norm_q90"] == pytest.approx(9.0)
    assert s.loc[0, "b_err_abs_median"] == 5.0  # magnitudes


def test_summarize_leaves_diverged_runs_out_of_the_statistics_and_counts_them():
    df = pd.DataFrame({"num_train": 10, "lr": 0.1, "epoch": 1, "loss": "squared", "sigma": 1.0, "reduction": "mean",
                       "batch_size": 32, "noise": 0.01, "noise_kind": "gaussian", "replicate": [0, 1, 2],
                       "seed": [0, 1, 2], "w_err_norm": [1.0, 3.0, np.inf], "b_err": 0.0, "ols_w_err_norm": 0.0,
                       "ols_b_err": 0.0, "gap_w_norm": 0.0, "val_mse": 0.0, "diverged": [False, False, True]})
    s = summarize(df)
    assert s.loc[0, "count"] == 3 and s.loc[0, "diverged"] == 1 and s.loc[0, "w_err_norm_mean"] == 2.0


def test_summarize_by_default_groups_the_varying_axes_and_epoch(table):
    s = summarize(table)
    assert list(s.columns[:3]) == ["num_train", "lr", "epoch"]
    assert len(s) == 2 * 2 * 3 and (s["count"] == 5).all()


def test_summarize_without_epoch_uses_each_runs_last_checkpoint(table):
    s = summarize(table, by=["lr"])
    assert len(s) == 2 and (s["count"] == 10).all()
    last = table[table["epoch"] == 2]
    expected = last.groupby("lr")["w_err_norm"].median().to_numpy()
    np.testing.assert_allclose(s["w_err_norm_median"], expected)


def test_summarize_bad_by(table):
    with pytest.raises(ValueError, match=r"The 'by' parameter of summarize must name columns of the table; \['nope'\]"):
        summarize(table, by=["nope"])


def test_write_csv_is_atomic_and_round_trips(tmp_path, table):
    path = tmp_path / "t.csv"
    write_csv(table, path)
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left behind
    back = read_results(path)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_write_csv_failure_keeps_the_old_file(tmp_path, table):
    path = tmp_path / "t.csv"
    path.write_text("old")

    class Boom(pd.DataFrame):
        def to_csv(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv(Boom(table), path)
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_read_results_refuses_other_files(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="is not a results CSV of this schema: it lacks the columns"):
        read_results(other)
    with pytest.raises(FileNotFoundError, match="No results file at"):
        read_results(tmp_path / "missing.csv")
