"""Summaries and their Monte Carlo precision, from known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.errors import ParameterError
from study.grid import Grid
from study.runner import run_grid
from study.summaries import diverged_runs, fewest_runs, median_ranks, summarize


def test_summarize_counts_and_known_quantiles():
    df = pd.DataFrame(
        {
            **{
                a: v
                for a, v in dict(
                    num_train=10,
                    lr=0.1,
                    epoch=1,
                    loss="squared",
                    sigma=1.0,
                    reduction="mean",
                    batch_size=32,
                    noise=0.01,
                    noise_kind="gaussian",
                ).items()
            },
            "replicate": range(11),
            "seed": range(11),
            "w_err_norm": np.arange(11.0),
            "b_err": -np.arange(11.0),
            "ols_w_err_norm": 1.0,
            "ols_b_err": 2.0,
            "gap_w_norm": 3.0,
            "val_mse": 4.0,
            "diverged": False,
        }
    )
    s = summarize(df)
    assert len(s) == 1 and s.loc[0, "count"] == 11 and s.loc[0, "diverged"] == 0
    assert s.loc[0, "w_err_norm_median"] == 5.0 and s.loc[0, "w_err_norm_mean"] == 5.0
    assert s.loc[0, "w_err_norm_q10"] == pytest.approx(1.0) and s.loc[0, "w_err_norm_q90"] == pytest.approx(9.0)
    assert s.loc[0, "b_err_abs_median"] == 5.0  # magnitudes


def test_summarize_leaves_diverged_runs_out_of_the_statistics_and_counts_them():
    df = pd.DataFrame(
        {
            "num_train": 10,
            "lr": 0.1,
            "epoch": 1,
            "loss": "squared",
            "sigma": 1.0,
            "reduction": "mean",
            "batch_size": 32,
            "noise": 0.01,
            "noise_kind": "gaussian",
            "replicate": [0, 1, 2],
            "seed": [0, 1, 2],
            "w_err_norm": [1.0, 3.0, np.inf],
            "b_err": 0.0,
            "ols_w_err_norm": 0.0,
            "ols_b_err": 0.0,
            "gap_w_norm": 0.0,
            "val_mse": 0.0,
            "diverged": [False, False, True],
        }
    )
    s = summarize(df)
    assert s.loc[0, "count"] == 3 and s.loc[0, "diverged"] == 1 and s.loc[0, "w_err_norm_mean"] == 2.0


def test_summarize_of_runs_that_all_diverged_counts_them_with_no_statistics():
    """Found by the CLI's fuzz test: `study run` of a lone diverging run (lr = 2) ended in a
    KeyError when it printed its medians."""
    df = pd.DataFrame(
        {
            "num_train": 10,
            "lr": [2.0, 2.0, 0.1],
            "epoch": 1,
            "loss": "squared",
            "sigma": 1.0,
            "reduction": "mean",
            "batch_size": 32,
            "noise": 0.01,
            "noise_kind": "gaussian",
            "replicate": [0, 1, 0],
            "seed": [0, 1, 0],
            "w_err_norm": [np.inf, np.nan, 1.0],
            "b_err": 0.0,
            "ols_w_err_norm": 0.5,
            "ols_b_err": 0.0,
            "gap_w_norm": 0.0,
            "val_mse": 0.0,
            "diverged": [True, True, False],
        }
    )
    alone = summarize(df[df["lr"] == 2.0], by="lr")
    assert list(alone["count"]) == [2] and list(alone["diverged"]) == [2]
    for stat in ("mean", "median", "q10", "q90"):
        assert np.isnan(alone[f"w_err_norm_{stat}"].item())
    assert alone["ols_w_err_norm_median"].item() == 0.5  # least squares is still there
    both = summarize(df, by="lr")  # a cell with no statistics beside one with them
    assert list(both["lr"]) == [0.1, 2.0] and list(both["count"]) == [1, 2]
    np.testing.assert_array_equal(both["w_err_norm_q90"].to_numpy(), [1.0, np.nan])


def test_summarize_by_default_groups_the_varying_axes_and_epoch(small_table):
    s = summarize(small_table)
    assert list(s.columns[:3]) == ["num_train", "lr", "epoch"]
    assert len(s) == 2 * 2 * 3 and (s["count"] == 5).all()


def test_summarize_without_epoch_uses_each_runs_last_checkpoint(small_table):
    s = summarize(small_table, by=["lr"])
    assert len(s) == 2 and (s["count"] == 10).all()
    last = small_table[small_table["epoch"] == 2]
    expected = last.groupby("lr")["w_err_norm"].median().to_numpy()
    np.testing.assert_allclose(s["w_err_norm_median"], expected)


def test_summarize_bad_by(small_table):
    with pytest.raises(
        ParameterError,
        match=r"The 'by' parameter of summarize must be columns of the table \(its "
        r"axes: num_train, num_inputs, lr, epoch, .*\)\. Got 'nope' instead\.",
    ):
        summarize(small_table, by=["nope"])
    with pytest.raises(
        ParameterError,
        match=r"The 'epoch' parameter of summarize must be one of the table's "
        r"checkpoints \(0, 1, 2\)\. Got 5 instead\.",
    ):
        summarize(small_table, by="lr", epoch=5)


def _runs(**columns) -> pd.DataFrame:
    """A results table of known values: one row per entry, the grid's defaults elsewhere."""
    n = len(next(v for v in columns.values() if isinstance(v, list)))
    base = dict(
        num_train=10,
        lr=0.1,
        epoch=1,
        loss="squared",
        sigma=1.0,
        reduction="mean",
        batch_size=32,
        noise=0.01,
        noise_kind="gaussian",
        replicate=0,
        seed=0,
        w_err_0=0.0,
        w_err_1=0.0,
        w_err_norm=1.0,
        b_err=0.0,
        ols_w_err_norm=1.0,
        ols_b_err=0.0,
        gap_w_norm=0.0,
        val_mse=0.0,
        diverged=False,
    )
    return pd.DataFrame({**base, **columns}, index=range(n))


def test_summarize_least_squares_over_every_run_once_per_stream():
    """Three data streams, each trained at two lrs (common random numbers). At lr 3 two of the
    three runs diverged: SGD's statistics leave them out, least squares keeps every stream."""
    df = _runs(
        lr=[0.1, 0.1, 0.1, 3.0, 3.0, 3.0],
        seed=[1, 2, 3, 1, 2, 3],
        replicate=[0, 1, 2, 0, 1, 2],
        w_err_norm=[1.0, 2.0, 3.0, 10.0, np.inf, np.inf],
        ols_w_err_norm=[0.1, 0.2, 0.9] * 2,
        diverged=[False, False, False, False, True, True],
    )
    by_lr = summarize(df, by="lr").set_index("lr")
    assert by_lr["count"].tolist() == [3, 3] and by_lr["diverged"].tolist() == [0, 2]
    assert by_lr["streams"].tolist() == [3, 3]
    assert by_lr["w_err_norm_median"].tolist() == [2.0, 10.0]
    assert by_lr["ols_w_err_norm_median"].tolist() == [0.2, 0.2]  # not 0.1, the lone survivor's
    assert by_lr["ols_w_err_norm_mean"].tolist() == pytest.approx([0.4, 0.4])
    pooled = summarize(df, by="loss")  # both lrs in one cell: each stream once for least squares
    assert pooled.loc[0, "count"] == 6 and pooled.loc[0, "streams"] == 3
    assert pooled.loc[0, "ols_w_err_norm_mean"] == pytest.approx(0.4)
    assert pooled.loc[0, "w_err_norm_median"] == 2.5  # of 1, 2, 3, 10: the diverged runs left out


def test_summarize_names_the_epoch_it_shows_and_the_axes_it_pools(small_table):
    s = summarize(small_table, by="lr")
    assert s["epoch"].tolist() == [2, 2] and s.attrs["epoch"] == "epoch 2 (the last checkpoint)"
    assert s.attrs["pooled"] == {"num_train": [10, 100]}
    assert (s["pooled_over"] == "num_train (10, 100)").all()
    at1 = summarize(small_table, by=["num_train", "lr"], epoch=1)
    assert (at1["epoch"] == 1).all() and at1.attrs["epoch"] == "epoch 1" and "pooled_over" not in at1
    assert at1.attrs["pooled"] == {}
    every = summarize(small_table)
    assert every.attrs["epoch"] == "every checkpoint (epochs 0, 1, 2)"


def test_diverged_runs_lists_each_run_once_with_its_first_diverged_checkpoint():
    df = _runs(
        epoch=[0, 1, 2, 0, 1, 2, 0, 1, 2],
        lr=[0.1] * 3 + [3.0] * 6,
        seed=[1, 1, 1, 1, 1, 1, 2, 2, 2],
        replicate=[0, 0, 0, 0, 0, 0, 1, 1, 1],
        diverged=[False] * 4 + [True, True, False, False, True],
    )
    runs = diverged_runs(df)
    assert runs[["lr", "seed", "replicate", "diverged_at"]].values.tolist() == [[3.0, 1, 0, 1], [3.0, 2, 1, 2]]
    assert "epoch" not in runs and {"num_train", "loss", "sigma"} <= set(runs.columns)
    assert diverged_runs(df, epoch=1)["seed"].tolist() == [1]
    with pytest.raises(ParameterError, match="'epoch' parameter of diverged_runs"):
        diverged_runs(df, epoch=7)


def test_summarize_takes_one_column_name_as_a_string():
    df = run_grid(Grid(num_train=[20], loss=["squared", "huber"], epoch=[1], replicates=3), n_jobs=1, progress=False)
    one, listed = summarize(df, by="loss"), summarize(df, by=["loss"])
    pd.testing.assert_frame_equal(one, listed)
    assert one["loss"].tolist() == ["squared", "huber"] and one["count"].tolist() == [3, 3]


def _synthetic(cells: int, units: int, rng, runs_per_stream: int = 1) -> pd.DataFrame:
    """A results table of ``cells`` cells (num_train 1, 2, ...) of ``units`` data streams each,
    whose errors are drawn from known distributions: w_err_0 ~ N(0.1, 0.2²), b_err ~ N(-0.3,
    0.5²), ‖ŵ − w‖ ~ LogNormal(0, 1) (median 1), least squares' errors half SGD's and noisy."""
    n = cells * units * runs_per_stream
    cell = np.repeat(np.arange(cells), units * runs_per_stream)
    seed = np.repeat(np.arange(cells * units), runs_per_stream)
    norm = rng.lognormal(0.0, 1.0, n)
    return pd.DataFrame(
        {
            "num_train": cell + 1,
            "lr": np.tile([0.1, 0.2][:runs_per_stream], cells * units),
            "epoch": 1,
            "loss": "squared",
            "sigma": 1.0,
            "reduction": "mean",
            "batch_size": 32,
            "noise": 0.01,
            "noise_kind": "gaussian",
            "replicate": seed,
            "seed": seed,
            "w_err_0": rng.normal(0.1, 0.2, n),
            "w_err_norm": norm,
            "b_err": rng.normal(-0.3, 0.5, n),
            "ols_w_err_norm": np.repeat(np.abs(rng.normal(0, 1, cells * units)), runs_per_stream),
            "ols_b_err": np.repeat(rng.normal(0, 0.2, cells * units), runs_per_stream),
            "gap_w_norm": 0.0,
            "val_mse": 0.0,
            "diverged": False,
        }
    )


def test_precision_measures_are_their_closed_forms():
    """Each measure and its MCSE as Morris, White & Crowther (2019) write them, on one cell."""
    df = _synthetic(1, 50, np.random.default_rng(1))
    s = summarize(df, by="num_train", ci=0.95).iloc[0]
    x, n = df["w_err_0"].to_numpy(), 50
    assert s["units"] == n
    assert s["w_err_0_bias"] == pytest.approx(x.mean(), rel=1e-12)
    assert s["w_err_0_bias_mcse"] == pytest.approx(np.sqrt(((x - x.mean()) ** 2).sum() / (n * (n - 1))), rel=1e-12)
    assert s["w_err_0_empse"] == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert s["w_err_0_empse_mcse"] == pytest.approx(x.std(ddof=1) / np.sqrt(2 * (n - 1)), rel=1e-12)
    mse = (x**2).mean()
    assert s["w_err_0_rmse"] == pytest.approx(np.sqrt(mse), rel=1e-12)
    mse_mcse = np.sqrt(((x**2 - mse) ** 2).sum() / (n * (n - 1)))
    assert s["w_err_0_rmse_mcse"] == pytest.approx(mse_mcse / (2 * np.sqrt(mse)), rel=1e-12)
    a, b = df["w_err_norm"].to_numpy() ** 2, df["ols_w_err_norm"].to_numpy() ** 2
    ratio = a.mean() / b.mean()
    delta = np.sqrt(np.var(a - ratio * b, ddof=1) / n) / b.mean()  # the delta method for a ratio of means
    assert s["w_err_norm_releff"] == pytest.approx(ratio, rel=1e-12)
    assert s["w_err_norm_releff_mcse"] == pytest.approx(delta, rel=1e-10)
    low, high = median_ranks(n)
    ordered = np.sort(np.abs(df["b_err"].to_numpy()))
    assert (s["b_err_abs_median_lo"], s["b_err_abs_median_hi"]) == (ordered[low - 1], ordered[high - 1])


def test_mcse_predicts_the_spread_of_its_estimate_across_studies():
    """Over 400 independent sub-studies of 100 streams, each MCSE is close to the actual
    standard deviation of its estimate (the closed forms for normal samples: σ/√n for the bias,
    σ/√(2(n-1)) for the empirical SE)."""
    s = summarize(_synthetic(400, 100, np.random.default_rng(2)), by="num_train", ci=0.95)
    for measure in ("w_err_0_bias", "w_err_0_empse", "w_err_0_rmse", "b_err_bias", "b_err_releff"):
        spread, predicted = s[measure].std(ddof=1), s[f"{measure}_mcse"].mean()
        assert 0.85 < predicted / spread < 1.15, measure
    assert s["w_err_0_bias_mcse"].mean() == pytest.approx(0.2 / np.sqrt(100), rel=0.05)
    assert s["w_err_0_empse_mcse"].mean() == pytest.approx(0.2 / np.sqrt(2 * 99), rel=0.05)


def test_median_interval_covers_the_true_median_95_percent_of_the_time():
    """2,000 sub-studies of 100 runs from a skewed distribution whose median is 1."""
    s = summarize(_synthetic(2000, 100, np.random.default_rng(3)), by="num_train", ci=0.95)
    covered = ((s["w_err_norm_median_lo"] <= 1.0) & (1.0 <= s["w_err_norm_median_hi"])).mean()
    assert 0.93 <= covered <= 0.97
    assert median_ranks(100) == (40, 61) and median_ranks(5) is None
    assert fewest_runs(0.95) == 6 and fewest_runs(0.99) == 8 and median_ranks(8, 0.99) is not None


def test_precision_counts_data_streams_not_runs():
    """A cell that holds two runs of each stream (two lrs on the same data) has as many
    independent units as streams: its MCSE is not narrowed by the second run."""
    df = _synthetic(1, 40, np.random.default_rng(4), runs_per_stream=2)
    s = summarize(df, by="num_train", ci=0.95).iloc[0]
    assert (s["count"], s["streams"], s["units"]) == (80, 40, 40)
    per_stream = df.groupby("seed")["w_err_0"].mean().to_numpy()
    assert s["w_err_0_bias_mcse"] == pytest.approx(per_stream.std(ddof=1) / np.sqrt(40), rel=1e-12)
    with pytest.raises(ParameterError, match="The 'ci' parameter of summarize must be a level between 0 and 1"):
        summarize(df, ci=95)


def test_precision_shortfall_predicts_replicates_from_the_intervals_width():
    """An interval narrows as 1/√n: a cell at ±r with n streams needs n (r/target)² for ±target."""
    from study.summaries import precision_shortfall

    df = _synthetic(2, 50, np.random.default_rng(6))
    s = summarize(df, by="num_train", ci=0.95)
    got = precision_shortfall(df, target=0.05, replicates=50)
    m, lo, hi = (s[c].to_numpy() for c in ("w_err_norm_median", "w_err_norm_median_lo", "w_err_norm_median_hi"))
    relative = np.maximum(hi - m, m - lo) / m
    np.testing.assert_allclose(got["relative"], relative, rtol=1e-15)
    assert list(got["replicates_needed"]) == list(np.ceil(50 * (relative / 0.05) ** 2).astype(int))
    assert (got["replicates_needed"] > 50).all()  # lognormal medians from 50 runs are not within ±5%


def test_precision_shortfall_leaves_out_cells_where_most_runs_diverged():
    """More replicates cannot give a finite median to a cell where most runs diverge: it needs
    none, and is marked; a cell where a few diverged is measured on the others."""
    from study.summaries import precision_shortfall

    df = _synthetic(2, 40, np.random.default_rng(7))
    diverged = ((df["num_train"] == 1) & (df["replicate"] % 4 != 0)) | (
        (df["num_train"] == 2) & (df["replicate"] % 10 == 0)
    )
    df.loc[diverged, ["w_err_norm", "b_err", "w_err_0"]] = np.nan
    df["diverged"] = diverged
    got = precision_shortfall(df, target=0.05).set_index("num_train")
    assert bool(got.loc[1, "diverging"]) and np.isnan(got.loc[1, "relative"]) and got.loc[1, "replicates_needed"] == 0
    assert not got.loc[2, "diverging"] and got.loc[2, "units"] == 36
    assert np.isfinite(got.loc[2, "relative"]) and got.loc[2, "replicates_needed"] > 36
