from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from study.grid import Grid
from study.plots import error_curve, left_out_note, loss_shapes, lr_epoch_heatmap, save_figure
from study.runner import run_grid


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    grid = Grid(num_train=[20, 50, 200], lr=[0.03, 0.3, 10.0], epoch=[1, 3], replicates=4, num_val=20)
    return run_grid(grid, n_jobs=1, progress=False)


def test_error_curve_draws_medians_on_log_axes_and_counts_what_it_leaves_out(runs):
    at = runs[runs["epoch"] == 3]
    ax = error_curve(at, x="num_train", y="w_err_norm", hue="lr", floor="ols_w_err_norm")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "training examples (num_train)" and ax.get_ylabel() == "‖ŵ − w‖₂"
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
    n_diverged = int(at["diverged"].sum())
    assert n_diverged > 0  # lr 10 diverges
    surviving_lrs = at[~at["diverged"]]["lr"].nunique()
    assert len(lines) == surviving_lrs + 1  # one median line per lr that has survivors, and the floor
    assert all(len(line.get_xdata()) == 3 for line in lines)  # one point per num_train
    texts = [t.get_text() for t in ax.texts]
    assert f"left out: {n_diverged} diverged (of {len(at)})" in texts
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "least squares on the same data" in legend and ax.get_legend().get_title().get_text() == "lr"


def test_error_curve_fit_puts_the_slope_in_the_legend(runs):
    at = runs[(runs["epoch"] == 3) & (runs["lr"] == 0.3)]
    ax = error_curve(at, x="num_train", y="w_err_norm", floor="ols_w_err_norm", fit_from=20)
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "SGD (slope" in legend and "least squares on the same data (slope" in legend


def test_left_out_note_counts_zero_and_diverged():
    df = pd.DataFrame({"e": [0.0, 1.0, -2.0, np.inf], "diverged": [False, False, False, True]})
    shown, note = left_out_note(df, "e")
    assert list(shown["|e|"]) == [1.0, 2.0]
    assert note == "left out: 1 diverged, 1 exactly 0 (of 4)"


def test_error_curve_uses_the_given_axes(runs):
    fig, axes = plt.subplots(1, 2)
    out = error_curve(runs[runs["epoch"] == 1], x="num_train", y="b_err", ax=axes[1])
    assert out is axes[1] and axes[1].get_ylabel() == "|b̂ − b|" and not axes[0].get_lines()


def test_lr_epoch_heatmap_marks_diverged_cells(runs):
    ax = lr_epoch_heatmap(runs[runs["num_train"] == 200])
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("div.") == 2  # lr 10 at epochs 1 and 3
    assert len(texts) == 3 * 2 and ax.get_ylabel() == "learning rate" and ax.get_xlabel() == "epoch"


def test_loss_shapes_draws_each_loss_and_its_derivative():
    fig, axes = plt.subplots(1, 2)
    loss_shapes([0.5, 1.0], axes=axes)
    assert len(axes[0].get_lines()) == 3 + 1  # squared, two Huber, the zero line
    huber_derivative = axes[1].get_lines()[1].get_ydata()
    assert huber_derivative.max() == 1.0 and huber_derivative.min() == -1.0


def test_save_figure_writes_png_and_svg_reproducibly(tmp_path, runs):
    def draw():
        fig, ax = plt.subplots()
        error_curve(runs[runs["epoch"] == 3], x="num_train", y="w_err_norm", ax=ax)
        return fig

    first = save_figure(draw(), tmp_path / "a" / "f.png")
    assert [p.suffix for p in first] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in first)
    png, svg = first[0].read_bytes(), first[1].read_bytes()
    save_figure(draw(), tmp_path / "a" / "f.png")
    assert first[0].read_bytes() == png and first[1].read_bytes() == svg
