from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from study.exercises import Estimate, _ratio, _sig, gradient_access, run_exercises
from study.results import PoolingError, read_results

PROMISED = {
    "results": [
        "ex1_reduction.csv",
        "ex1_best_lr.csv",
        "ex2_huber.csv",
        "ex3_gradients.csv",
        "ex3_grad_access.csv",
        "ex4_lr_epochs.csv",
        "ex5_data_size.csv",
        "ex5_slopes.csv",
        "ex6_reaching_the_limit.csv",
        "ex7_weight_decay.csv",
        "answers.md",
    ],
    "figures": [
        f"{name}.{ext}"
        for name in (
            "ex1_reduction",
            "ex2_huber_losses",
            "ex2_huber",
            "ex3_gradients",
            "ex4_lr_epochs",
            "ex5_data_size",
            "ex6_reaching_the_limit",
            "ex7_weight_decay",
        )
        for ext in ("png",)
    ],
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    outcomes = run_exercises(quick=True, out_dir=out, n_jobs=1, progress=False, log=lambda _: None)
    return out, outcomes


def test_run_exercises_quick_writes_every_promised_file(quick):
    out, outcomes = quick
    for folder, names in PROMISED.items():
        for name in names:
            assert (out / folder / name).is_file(), f"{folder}/{name}"
    assert sorted(outcomes) == [1, 2, 3, 4, 5, 6, 7]
    answers = (out / "results" / "answers.md").read_text()
    assert all(f"**Exercise {n}.**" in answers for n in range(1, 6))
    assert "**Study 6.**" in answers and "**Study 7.**" in answers


def test_ex5_quick_least_squares_slope_is_near_minus_a_half(quick):
    out, _ = quick
    slopes = pd.read_csv(out / "results" / "ex5_slopes.csv").set_index("quantity")
    assert -0.7 <= slopes.loc["ols_w_err_norm", "slope"] <= -0.3
    assert (
        slopes.loc["ols_w_err_norm", "low"]
        <= slopes.loc["ols_w_err_norm", "slope"]
        <= slopes.loc["ols_w_err_norm", "high"]
    )


def test_ex1_quick_best_lr_ratio_is_the_batch_size_within_the_grid_step(quick):
    out, _ = quick
    best = pd.read_csv(out / "results" / "ex1_best_lr.csv").set_index("reduction")
    ratio = best.loc["mean", "smallest_diverging_lr"] / best.loc["sum", "smallest_diverging_lr"]
    assert 32 / 1.8 <= ratio <= 32 * 1.8  # lrs are 10^(1/4) apart


def test_ex2_quick_huber_beats_squared_under_outliers(quick):
    out, _ = quick
    table = pd.read_csv(out / "results" / "ex2_huber.csv")
    last = table[
        (table["noise_kind"] == "outliers") & (table["epoch"] == table["epoch"].max()) & (table["num_train"] == 1000)
    ].set_index("loss_sigma")
    assert last.loc["Huber σ=0.1", "w_err_norm_median"] < last.loc["squared", "w_err_norm_median"] / 5


def test_gradient_access_reads_the_last_minibatch_gradient():
    table = gradient_access(epochs=1)
    assert list(table["examples"]) == [8, 1000]  # 1000 = 31 * 32 + 8: the ragged last minibatch
    assert table["grad_w_0"].notna().all() and table.loc[0, "grad_w_0"] != table.loc[1, "grad_w_0"]


def test_run_exercises_refuses_unknown_numbers_and_a_missing_folder(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"The 'numbers' parameter of run_exercises must be among \[1, 2, 3, 4, 5, 6, 7\]\. "
        r"Got 8",
    ):
        run_exercises([8], out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"The 'out_dir' parameter of run_exercises must be a folder that exists"):
        run_exercises([1], out_dir=tmp_path / "nope")
    assert not any(tmp_path.iterdir())


def test_run_exercises_logs_the_paths_it_writes(tmp_path):
    lines = []
    run_exercises(
        [3], quick=True, out_dir=tmp_path, n_jobs=1, progress=False, log=lines.append, formats=(".png", ".svg")
    )
    assert lines[:3] == [f"created folder {tmp_path / f}" for f in ("results", "results/raw", "figures")]
    written = lines[-1].split(" s: ", 1)[1].split(", ")
    assert written == [
        str(tmp_path / p)
        for p in (
            "results/ex3_gradients.csv",
            "results/ex3_grad_access.csv",
            "figures/ex3_gradients.png",
            "figures/ex3_gradients.svg",
        )
    ]
    assert all((tmp_path / p).is_file() for p in written)


def test_ex5_figure_and_slopes_table_give_one_least_squares_interval(quick):
    """The exercise-5 bug: the legend's interval came from rows pooled over 3 lrs (each data set
    counted 3 times). Both now come from one value per data stream, by one function."""
    out, outcomes = quick
    slopes = pd.read_csv(out / "results" / "ex5_slopes.csv").set_index("quantity")
    ols = slopes.loc["ols_w_err_norm"]
    assert ols["units"] == 6 * 9  # 6 replicates x 9 sizes: data sets, not runs (3 lrs x 2 losses each)
    legend = [t.get_text() for t in outcomes[5].figures["ex5_data_size"].axes[0].get_legend().get_texts()]
    floor = next(text for text in legend if text.startswith("least squares on the same data"))
    assert floor.endswith(f"(slope {ols['slope']:.2f} [{ols['low']:.2f}, {ols['high']:.2f}])")
    answers = (out / "results" / "answers.md").read_text()
    assert f"n^{ols['slope']:.2f} (95% interval [{ols['low']:.2f}, {ols['high']:.2f}])" in answers


def test_quick_answers_say_what_the_quick_grids_hold(quick):
    out, _ = quick
    answers = (out / "results" / "answers.md").read_text()
    ex5 = answers.split("**Exercise 5.**")[1].split("**Study 6.**")[0]
    assert "9 sizes from 5 to 2,000 cover 2.6 decades" in ex5 and "11 sizes" not in ex5 and "10,000" not in ex5
    slopes = pd.read_csv(out / "results" / "ex5_slopes.csv")
    sgd = slopes[slopes["quantity"].str.startswith("w_err_norm (SGD, squared, lr=0.03,")].iloc[0]
    assert sgd["sizes"] >= 3 and sgd["fit_from"] == 500  # 500, 1000, 2000: three sizes, never two
    word = "falls as" if sgd["high"] < 0 else "rises as" if sgd["low"] > 0 else "shows no clear trend"
    assert f"from n = 500 on (3 sizes) it {word}" in ex5
    assert "(only 10 steps" in ex5  # read from the table's steps column: ceil(5 / 32) x 10 epochs


def test_ex2_states_the_effective_step_of_each_loss(quick):
    from study.exercises import huber_step_check, step_ratio

    assert step_ratio(1.0) == 0.5 and step_ratio(0.1) == pytest.approx(5.0) and step_ratio(2.0) == 0.25
    assert step_ratio(1.0, residual=3.0) == pytest.approx(1 / 6)  # outside the zone: clipped at 1, against 2r = 6
    check = huber_step_check()
    assert check["squared_lr"] == 0.5 and check["max_abs_difference"] == 0.0
    out, outcomes = quick
    ex2 = (out / "results" / "answers.md").read_text().split("**Exercise 2.**")[1].split("**Exercise 3.**")[0]
    assert "without the book's ½" in ex2 and "Huber takes half the step of squared" in ex2
    assert "Huber at lr 1 against squared at lr 0.5" in ex2 and "exactly the same ŵ and b̂" in ex2
    notes = [t.get_text() for t in outcomes[2].figures["ex2_huber"].texts]
    assert any("σ=0.1: 0.15, σ=0.5: 0.03, σ=2: 0.0075" in n.replace("\n", " ") for n in notes)


def test_least_squares_in_the_answers_counts_every_run(quick):
    """Ex. 4's floor is the median over every data stream, diverged SGD runs or not."""
    out, _ = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex4_lr_epochs.parquet")
    last = raw[raw["epoch"] == raw["epoch"].max()]
    assert last["diverged"].any()
    floor = last.drop_duplicates("seed")["ols_w_err_norm"].median()
    assert f"least squares on the same examples ({_sig(floor)} " in (out / "results" / "answers.md").read_text()


def test_draw_figure_generic_and_exercise_figures_from_raw_tables(quick):
    from study.exercises import draw_figure

    out, _ = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex4_lr_epochs.parquet")
    fig = draw_figure(raw, "error-vs-epoch")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and fig.legends[0].get_title().get_text() == "lr"
    assert len(draw_figure(raw, "heatmap").axes) == 2  # the heatmap and its colour bar
    assert draw_figure(raw, "ex4_lr_epochs").axes[0].get_title().startswith("median")
    raw5 = read_results(out / "results" / "raw" / "ex5_data_size.parquet")
    fig = draw_figure(raw5, "error-vs-num_train")
    fixed = "held fixed: epoch 10, num_inputs = 2, sigma = 1, reduction = mean, batch_size = 32, noise = 0.01, noise_kind = gaussian"
    assert fig.texts[0].get_text() == (
        "‖ŵ − w‖₂ against num_train; epoch 10 (the last checkpoint); panels by loss "
        "(chosen by the figure: the table varies in them)\n" + fixed
    )
    assert [ax.get_title() for ax in fig.axes] == ["loss = squared", "loss = huber"]
    fig = draw_figure(raw5, "error-vs-num_train", hue="loss", col="lr", epoch=1, fixed={"lr": [0.01, 0.1]})
    assert fig.texts[0].get_text() == (
        "‖ŵ − w‖₂ against num_train; epoch 1; lr = 0.01, 0.1\n" + fixed.replace("epoch 10", "epoch 1")
    )
    raw2 = read_results(
        out / "results" / "raw" / "ex2_huber.parquet"
    )  # loss, sigma, num_train, noise_kind: one too many
    with pytest.raises(
        PoolingError, match=r"the figure error-vs-epoch would pool over noise_kind \(gaussian, outliers\)"
    ):
        draw_figure(raw2, "error-vs-epoch")


def test_draw_figure_refuses_unknown_names_and_columns(quick):
    from study.exercises import draw_figure

    out, _ = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex4_lr_epochs.parquet")
    with pytest.raises(
        ValueError, match=r"The 'figure' parameter of draw_figure must be one of \['error-vs-num_train'"
    ):
        draw_figure(raw, "scatter")
    with pytest.raises(
        ValueError, match=r"The 'y' parameter of draw_figure must be a column of the table\. Got 'nope'"
    ):
        draw_figure(raw, "heatmap", y="nope")
    with pytest.raises(
        ValueError,
        match=r"The 'hue' parameter of draw_figure must be left out with the exercise "
        r"figure ex4_lr_epochs",
    ):
        draw_figure(raw, "ex4_lr_epochs", hue="lr")
    with pytest.raises(
        ValueError,
        match=r"The 'figure' parameter of draw_figure must be a figure the table can draw "
        r"\(ex1_reduction needs reduction = mean, sum; the table has reduction = mean\)",
    ):
        draw_figure(raw, "ex1_reduction")


def test_seed_example_gives_the_books_errors_and_least_squares_beside_them():
    from study.exercises import seed_example

    errors = seed_example(epochs=3, seed=0)
    assert errors["w"].abs().max() < 0.05 and abs(float(errors["b"])) < 0.05  # the book's order of magnitude
    assert np.abs(errors["ols_w"]).max() < 2e-3 and abs(errors["ols_b"]) < 2e-3
    again = seed_example(epochs=3, seed=0)
    assert torch.equal(again["w"], errors["w"])


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
    from study.results import median_ranks

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
    from study.exercises import _estimate
    from study.results import median_ranks

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


def test_study_6_compares_each_way_of_training_with_least_squares_on_the_same_data(quick):
    """Its ratios are the medians of the run-by-run ratios SGD / least squares, with their
    order statistics, from the raw table; the tail average is compared with Polyak-Juditsky in
    the issue's two cases (n = 1,000, lr 0.1, epoch 20, from epoch 2; n = 10,000, lr 0.03,
    epoch 2, from epoch 1)."""
    from study.results import median_ranks

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


def test_study_7_reads_train_and_validation_error_and_the_best_weight_decay_from_the_raw_table(quick):
    from study.results import median_ranks

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
