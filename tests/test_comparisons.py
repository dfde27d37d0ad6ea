"""Paired comparisons on common random numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.comparisons import compare
from study.errors import ParameterError
from study.grid import Grid
from study.runner import run_grid
from study.summaries import median_ranks


@pytest.fixture(scope="module")
def crn() -> pd.DataFrame:
    """Squared and Huber on the same data (common random numbers), Gaussian noise and outliers."""
    grid = Grid(
        num_train=[200, 1000],
        lr=[0.03, 0.3],
        loss=["squared", "huber"],
        noise_kind=["gaussian", "outliers"],
        epoch=[20],
        replicates=30,
        num_val=20,
    )
    return run_grid(grid, n_jobs=1, progress=False)


def test_compare_pairs_runs_by_data_stream(crn):
    """The paired ratio per stream, by hand: its median, its order-statistic interval, the wins."""

    got = compare(crn, factor="loss", baseline="squared")
    assert got.attrs["paired"] and list(got["loss"].unique()) == ["huber"] and len(got) == 8
    at = crn[crn["epoch"] == 20]
    for cell in got.to_dict("records"):
        rows = at[
            (at["num_train"] == cell["num_train"]) & (at["lr"] == cell["lr"]) & (at["noise_kind"] == cell["noise_kind"])
        ]
        pairs = rows.pivot(index="seed", columns="loss", values="w_err_norm")
        ratios = np.sort((pairs["huber"] / pairs["squared"]).to_numpy())
        low, high = median_ranks(len(ratios))
        assert cell["streams"] == len(ratios) == 30
        assert cell["ratio"] == pytest.approx(np.median(ratios), rel=1e-15)
        assert (cell["ratio_lo"], cell["ratio_hi"]) == (ratios[low - 1], ratios[high - 1])
        assert cell["wins"] == (pairs["huber"] < pairs["squared"]).mean()
        rmse = np.sqrt((pairs["huber"] ** 2).sum() / (pairs["squared"] ** 2).sum())
        assert cell["rmse_ratio"] == pytest.approx(rmse, rel=1e-12)
        assert cell["rmse_ratio_lo"] <= cell["rmse_ratio"] <= cell["rmse_ratio_hi"]


def test_paired_intervals_are_narrower_than_unpaired_on_common_random_numbers(crn):

    paired = compare(crn, factor="loss", baseline="squared")
    unpaired = compare(crn, factor="loss", baseline="squared", paired=False)
    assert not unpaired.attrs["paired"] and unpaired["wins"].isna().all()
    width = lambda c, name: np.log(c[f"{name}_hi"] / c[f"{name}_lo"])  # noqa: E731  (widths on the ratio's log scale)
    for name in ("ratio", "rmse_ratio"):
        assert (width(paired, name) < width(unpaired, name)).mean() >= 0.75, name
        assert np.median(width(unpaired, name) / width(paired, name)) > 1.5, name


def test_compare_counts_a_diverged_run_as_a_loss_and_refuses_to_pair_the_data():

    rng = np.random.default_rng(5)
    base = dict(
        num_train=10,
        epoch=1,
        sigma=1.0,
        reduction="mean",
        batch_size=32,
        noise=0.01,
        noise_kind="gaussian",
        b_err=0.0,
        ols_w_err_norm=1.0,
        ols_b_err=0.0,
        gap_w_norm=0.0,
        val_mse=0.0,
    )
    error = rng.lognormal(0, 0.1, 10)
    df = pd.concat(
        [
            pd.DataFrame(
                {
                    **base,
                    "lr": 0.1,
                    "loss": "squared",
                    "replicate": range(10),
                    "seed": range(10),
                    "w_err_norm": error,
                    "diverged": False,
                }
            ),
            pd.DataFrame(
                {
                    **base,
                    "lr": 0.1,
                    "loss": "huber",
                    "replicate": range(10),
                    "seed": range(10),
                    "w_err_norm": np.where(np.arange(10) < 4, np.inf, error / 2),
                    "diverged": np.arange(10) < 4,
                }
            ),
        ],
        ignore_index=True,
    )
    got = compare(df, factor="loss", baseline="squared").iloc[0]
    assert got["streams"] == 10 and got["wins"] == 0.6  # the 4 diverged runs lost, never dropped
    assert got["ratio_hi"] == np.inf and got["rmse_ratio"] == np.inf
    with pytest.raises(ParameterError, match="The 'paired' parameter of compare must be False for num_train"):
        compare(
            df.assign(num_train=np.where(df["loss"] == "huber", 20, 10), lr=0.1, loss="squared"),
            factor="num_train",
            baseline=10,
            paired=True,
        )
    with pytest.raises(ParameterError, match="The 'baseline' parameter of compare must be one of the values loss"):
        compare(df, factor="loss", baseline="hubber")
