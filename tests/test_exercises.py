from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from study.exercises import STUDIES, gradient_access, run_exercises

PROMISED = {
    "results": ["ex1_reduction.csv", "ex1_best_lr.csv", "ex2_huber.csv", "ex3_gradients.csv", "ex3_grad_access.csv",
                "ex4_lr_epochs.csv", "ex5_data_size.csv", "ex5_slopes.csv", "answers.md"],
    "figures": [f"{name}.{ext}" for name in ("ex1_reduction", "ex2_huber_losses", "ex2_huber", "ex3_gradients",
                                             "ex4_lr_epochs", "ex5_data_size") for ext in ("png", "svg")],
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
    assert sorted(outcomes) == [1, 2, 3, 4, 5]
    answers = (out / "results" / "answers.md").read_text()
    assert all(f"**Exercise {n}.**" in answers for n in range(1, 6))


def test_ex5_quick_least_squares_slope_is_near_minus_a_half(quick):
    out, _ = quick
    slopes = pd.read_csv(out / "results" / "ex5_slopes.csv").set_index("quantity")
    assert -0.7 <= slopes.loc["ols_w_err_norm", "slope"] <= -0.3
    assert slopes.loc["ols_w_err_norm", "low"] <= slopes.loc["ols_w_err_norm", "slope"] <= slopes.loc["ols_w_err_norm", "high"]


def test_ex1_quick_best_lr_ratio_is_the_batch_size_within_the_grid_step(quick):
    out, _ = quick
    best = pd.read_csv(out / "results" / "ex1_best_lr.csv").set_index("reduction")
    ratio = best.loc["mean", "smallest_diverging_lr"] / best.loc["sum", "smallest_diverging_lr"]
    assert 32 / 1.8 <= ratio <= 32 * 1.8  # lrs are 10^(1/4) apart


def test_ex2_quick_huber_beats_squared_under_outliers(quick):
    out, _ = quick
    table = pd.read_csv(out / "results" / "ex2_huber.csv")
    last = table[(table["noise_kind"] == "outliers") & (table["epoch"] == table["epoch"].max())
                 & (table["num_train"] == 1000)].set_index("loss_sigma")
    assert last.loc["Huber σ=0.1", "w_err_norm_median"] < last.loc["squared", "w_err_norm_median"] / 5


def test_gradient_access_reads_the_last_minibatch_gradient():
    table = gradient_access(epochs=1)
    assert list(table["examples"]) == [8, 1000]  # 1000 = 31 * 32 + 8: the ragged last minibatch
    assert table["grad_w_0"].notna().all() and table.loc[0, "grad_w_0"] != table.loc[1, "grad_w_0"]


def test_run_exercises_refuses_unknown_numbers(tmp_path):
    with pytest.raises(ValueError, match=r"The 'numbers' parameter of run_exercises must be among \[1, 2, 3, 4, 5\]\. Got \[6\]"):
        run_exercises([6], out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_every_study_has_its_spec():
    from study.exercises import study_grid

    for study in STUDIES.values():
        full, small = study_grid(study), study_grid(study, quick=True)
        assert full.name == study.name and len(small.runs()) < len(full.runs())


def test_draw_figure_generic_and_exercise_figures_from_raw_tables(quick):
    from study.exercises import draw_figure

    out, _ = quick
    raw = pd.read_csv(out / "results" / "raw" / "ex4_lr_epochs.csv")
    fig = draw_figure(raw, "error-vs-epoch")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_legend().get_title().get_text() == "lr"
    assert len(draw_figure(raw, "heatmap").axes) == 2  # the heatmap and its colour bar
    assert draw_figure(raw, "ex4_lr_epochs").axes[0].get_title().startswith("median")
    raw5 = pd.read_csv(out / "results" / "raw" / "ex5_data_size.csv")
    assert "pooled over loss" in draw_figure(raw5, "error-vs-num_train").axes[0].get_title()


def test_draw_figure_refuses_unknown_names_and_columns(quick):
    from study.exercises import draw_figure

    out, _ = quick
    raw = pd.read_csv(out / "results" / "raw" / "ex4_lr_epochs.csv")
    with pytest.raises(ValueError, match=r"The 'figure' parameter of draw_figure must be one of \['error-vs-num_train'"):
        draw_figure(raw, "scatter")
    with pytest.raises(ValueError, match=r"The 'y' parameter of draw_figure must be a column of the table\. Got 'nope'"):
        draw_figure(raw, "heatmap", y="nope")


def test_seed_example_gives_the_books_errors_and_least_squares_beside_them():
    from study.exercises import seed_example

    errors = seed_example(epochs=3, seed=0)
    assert errors["w"].abs().max() < 0.05 and abs(float(errors["b"])) < 0.05  # the book's order of magnitude
    assert np.abs(errors["ols_w"]).max() < 2e-3 and abs(errors["ols_b"]) < 2e-3
    again = seed_example(epochs=3, seed=0)
    assert torch.equal(again["w"], errors["w"])
