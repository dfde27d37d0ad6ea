from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.grid import Grid
from study.results import fit_power_law, read_results, summarize, write_csv
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


def test_write_csv_rounds_a_summary_to_its_significant_digits(tmp_path):
    df = pd.DataFrame({"a": [0.123456789123, 1234567.891], "n": [3, 4]})
    write_csv(df, tmp_path / "full.csv")
    write_csv(df, tmp_path / "summary.csv", significant=6)
    assert (tmp_path / "full.csv").read_text().splitlines()[1] == "0.123456789123,3"
    assert (tmp_path / "summary.csv").read_text().splitlines()[1:] == ["0.123457,3", "1.23457e+06,4"]


def test_summarize_takes_one_column_name_as_a_string():
    df = run_grid(Grid(num_train=[20], loss=["squared", "huber"], epoch=[1], replicates=3), n_jobs=1, progress=False)
    one, listed = summarize(df, by="loss"), summarize(df, by=["loss"])
    pd.testing.assert_frame_equal(one, listed)
    assert one["loss"].tolist() == ["squared", "huber"] and one["count"].tolist() == [3, 3]


def test_a_parquet_table_is_the_frame_and_carries_its_spec(tmp_path):
    """run_grid(out=*.parquet): the same rows and dtypes as the DataFrame it returns, the spec
    inside the file, the same bytes for the same seeded grid, and the same numbers as the CSV."""
    from study.results import table_metadata

    grid = Grid(num_train=[20, 40], lr=[0.01, 0.1], loss=["squared", "huber"], epoch=[1], replicates=2, name="pq")
    df = run_grid(grid, out=tmp_path / "a.parquet", n_jobs=1, progress=False)
    back = read_results(tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert isinstance(back["loss"].dtype, pd.CategoricalDtype) and back["loss"].cat.categories.tolist() == ["squared", "huber"]
    meta = table_metadata(tmp_path / "a.parquet")
    assert meta["spec"]["lr"] == [0.01, 0.1] and meta["stream"] == "counter" and "wall_time_s" not in meta
    assert (tmp_path / "a.meta.json").is_file()
    run_grid(grid, out=tmp_path / "b.parquet", n_jobs=1, progress=False)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    run_grid(grid, out=tmp_path / "c.csv", n_jobs=1, progress=False)
    pd.testing.assert_frame_equal(read_results(tmp_path / "c.csv"), back, check_exact=False, rtol=1e-15)


def test_a_file_that_is_not_a_results_table_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"is not a results Parquet file: "):
        read_results(bad)
