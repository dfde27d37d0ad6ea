from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import seaborn as sns

from study import theory
from study.analysis import read_results
from study.errors import ParameterError, PoolingError
from study.grid import Grid
from study.plots import (
    error_curve,
    error_facets,
    heatmap_facets,
    left_out_note,
    loss_shapes,
    lr_epoch_heatmap,
    merged_legend,
    nested_loop,
    save_figure,
)
from study.runner import run_grid


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    grid = Grid(num_train=[20, 50, 200], lr=[0.03, 0.3, 10.0], epoch=[1, 3], replicates=4, num_val=20)
    return run_grid(grid, n_jobs=1, progress=False)


@pytest.fixture(scope="module")
def losses() -> pd.DataFrame:
    """Squared and Huber, Gaussian noise and outliers: where theory holds, and where it does not."""
    grid = Grid(
        num_train=[50, 200, 1000],
        lr=[0.1],
        loss=["squared", "huber"],
        noise_kind=["gaussian", "outliers"],
        epoch=[20],
        replicates=4,
        num_val=20,
        noise=0.1,
    )
    df = run_grid(grid, n_jobs=1, progress=False)
    return df[df["epoch"] == 20]


def _labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []


def test_error_curve_draws_medians_on_log_axes_and_counts_what_it_leaves_out(runs):
    at = runs[runs["epoch"] == 3]
    ax = error_curve(at, x="num_train", y="w_err_norm", hue="lr", floor="ols_w_err_norm", theory=False, band="spread")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "training examples (num_train)" and ax.get_ylabel() == "‖ŵ − w‖₂"
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
    n_diverged = int(at["diverged"].sum())
    assert n_diverged > 0  # lr 10 diverges
    surviving_lrs = at[~at["diverged"]]["lr"].nunique()
    assert len(lines) == surviving_lrs + 1  # one median line per lr that has survivors, and the floor
    assert all(len(line.get_xdata()) == 3 for line in lines)  # one point per num_train
    note = ax.texts[-1].get_text().splitlines()
    assert note[:2] == ["median, 10–90% of 4 runs per point", f"left out: {n_diverged} diverged (of {len(at)})"]
    by_default = error_curve(at, x="num_train", y="w_err_norm", hue="lr", theory=False, ax=plt.figure().gca())
    assert by_default.texts[-1].get_text().splitlines()[:2] == [
        "median and its 95% interval of 4 runs per point",
        "no interval where under 6 runs",
    ]
    assert "least squares on the same data" in _labels(ax) and ax.get_legend().get_title().get_text() == "lr"
    assert "band: 10–90% of the runs" in _labels(ax)


def test_error_curve_floor_is_one_value_per_data_stream(runs):
    """The three lrs share their data: the grey median is over the 4 streams of each size."""
    at = runs[runs["epoch"] == 3]
    ax = error_curve(at, x="num_train", y="w_err_norm", hue="lr", floor="ols_w_err_norm", theory=False)
    floor = next(line for line in ax.get_lines() if line.get_label() == "least squares on the same data")
    expected = at.drop_duplicates("seed").groupby("num_train")["ols_w_err_norm"].median()
    np.testing.assert_allclose(floor.get_ydata(), expected.to_numpy())


def test_error_curve_marks_points_that_lost_runs(runs):
    """lr 0.3 at n = 20 keeps some runs and loses others: its point says how many it holds."""
    at = runs[(runs["epoch"] == 3) & (runs["lr"] == 0.3)].copy()
    at.loc[at.index[:2], "diverged"] = True  # two of the n = 20 runs
    ax = error_curve(at, x="num_train", y="w_err_norm", theory=False)
    marks = [t.get_text() for t in ax.texts if "/" in t.get_text() and "\n" not in t.get_text()]
    assert marks == ["2/4"]
    assert "a/b at a point: a of its b runs shown" in ax.texts[-1].get_text()


def test_error_curve_refuses_to_pool_an_axis_it_does_not_show(losses):
    with pytest.raises(
        PoolingError,
        match=r"error_curve would pool over loss \(squared, huber\) and noise_kind "
        r"\(gaussian, outliers\)",
    ) as caught:
        error_curve(losses, x="num_train", y="w_err_norm", hue="lr")
    assert caught.value.axes == {"loss": ["squared", "huber"], "noise_kind": ["gaussian", "outliers"]}
    # least squares depends on the data only: pooled over the losses it is the same numbers
    gaussian = losses[losses["noise_kind"] == "gaussian"]
    error_curve(gaussian, x="num_train", y="ols_w_err_norm")


def test_theory_is_drawn_where_it_holds_and_nowhere_else(losses):
    d, noise_var = 2, float(theory.noise_variance(0.1))
    panels = {
        (loss, kind): error_curve(
            losses[(losses["loss"] == loss) & (losses["noise_kind"] == kind)],
            x="num_train",
            y="w_err_norm",
            floor="ols_w_err_norm",
            ax=plt.figure().gca(),
        )
        for loss in ("squared", "huber")
        for kind in ("gaussian", "outliers")
    }
    ls = "theory: least squares, median (Gaussian noise)"
    # 50 and 200 examples end each epoch on a ragged minibatch of 32: the legend says the floor leaves it out
    sgd = "theory: SGD noise floor, RMS (squared loss, online limit),\nminibatches of batch_size only: not the ragged last one"
    assert {ls, sgd} <= set(_labels(panels["squared", "gaussian"]))
    assert ls in _labels(panels["huber", "gaussian"]) and sgd not in _labels(panels["huber", "gaussian"])
    assert not [
        x for x in _labels(panels["squared", "outliers"]) + _labels(panels["huber", "outliers"]) if "theory" in x
    ]
    ax = panels["squared", "gaussian"]
    median = next(line for line in ax.get_lines() if line.get_label() == ls)
    n = np.asarray(median.get_xdata())
    np.testing.assert_allclose(median.get_ydata(), theory.ols_w_err_norm_quantile(0.5, n, d, noise_var))
    floor = float(np.sqrt(theory.sgd_stationary_w_err_sq(0.1, 32, d, noise_var)))
    assert any(np.allclose(line.get_ydata(), floor) and line.get_linestyle() == "--" for line in ax.get_lines())


def test_error_curve_fit_puts_the_slope_in_the_legend_or_says_why_not(runs):
    at = runs[(runs["epoch"] == 3) & (runs["lr"] == 0.3)]
    ax = error_curve(at, x="num_train", y="w_err_norm", floor="ols_w_err_norm", fit_from=20)
    legend = " ".join(_labels(ax))
    assert "SGD (slope" in legend and "least squares on the same data (slope" in legend
    ax = error_curve(at, x="num_train", y="w_err_norm", fit_from=50, ax=plt.figure().gca())
    assert "SGD (no slope: 2 num_train ≥ 50)" in _labels(ax)


def test_left_out_note_counts_zero_diverged_and_points_off_a_log_axis():
    df = pd.DataFrame(
        {"e": [0.0, 1.0, -2.0, np.inf, 3.0], "epoch": [1, 1, 1, 1, 0], "diverged": [False, False, False, True, False]}
    )
    assert left_out_note(df, "e") == "left out: 1 diverged, 1 exactly 0 (of 5)"
    note = left_out_note(df, "e", x="epoch")
    assert note == "left out: 1 diverged, 1 at epoch 0 (log axis), 1 exactly 0 (of 5)"
    assert left_out_note(df.assign(epoch=[1, 1, 1, 1, -1]), "e", x="epoch").count("at epoch ≤ 0") == 1
    assert left_out_note(df, "e", diverged=False) == "left out: 1 exactly 0, 1 not finite (of 5)"


def test_error_curve_uses_the_given_axes(runs):
    fig, axes = plt.subplots(1, 2)
    out = error_curve(runs[runs["epoch"] == 1], x="num_train", y="b_err", hue="lr", ax=axes[1])
    assert out is axes[1] and axes[1].get_ylabel() == "|b̂ − b|" and not axes[0].get_lines()


def test_error_facets_one_panel_per_value_one_legend_and_colours_kept(losses):
    g = error_facets(
        losses, x="num_train", y="w_err_norm", hue="loss", col="noise_kind", title="epoch 20", band="spread"
    )
    assert isinstance(g, sns.FacetGrid) and g.axes.shape == (1, 2)
    assert [ax.get_title() for ax in g.axes.flat] == ["noise_kind = gaussian", "noise_kind = outliers"]
    labels = [t.get_text() for t in g.legend.get_texts()]
    assert (
        labels[:3] == ["squared", "huber", "least squares on the same data"]
        and g.legend.get_title().get_text() == "loss"
    )
    assert any(
        x.startswith("theory: SGD noise floor, RMS (squared loss, online limit)") for x in labels
    )  # Gaussian panel
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in g.axes.flat]
    assert g.figure.texts[0].get_text() == (
        "epoch 20\nheld fixed: epoch 20, num_inputs = 2, lr = 0.1, sigma = 1, reduction = mean, "
        "batch_size = 32, noise = 0.1"
    )
    assert g.axes[0, 0].get_yscale() == "log" and g.axes[0, 0].get_xscale() == "log"
    for ax in g.axes.flat:  # every panel counts its own runs
        assert ax.texts[-1].get_text().startswith("median, 10–90% of 4 runs per point")
    assert colours[0] and colours[1]


def test_error_facets_refuses_unknown_columns_and_pooling(losses):
    with pytest.raises(
        ParameterError,
        match=r"The 'hue' parameter of error_facets must be one column of the table "
        r"\(its axes: num_train, num_inputs, lr, epoch, .*\)\. Got 'lr,loss' instead\.",
    ):
        error_facets(losses, x="num_train", hue="lr,loss")
    with pytest.raises(ParameterError, match=r"The 'y' parameter of error_facets must be a measured column"):
        error_facets(losses, x="num_train", y="loss", hue="loss", col="noise_kind")
    with pytest.raises(
        ParameterError, match=r"'col' parameter .* another column than x \(num_train is on the x axis\)"
    ):
        error_facets(losses, x="num_train", col="num_train")
    with pytest.raises(PoolingError, match=r"pool over noise_kind \(gaussian, outliers\)"):
        error_facets(losses, x="num_train", hue="loss")


def test_lr_epoch_heatmap_marks_diverged_cells(runs):
    ax = lr_epoch_heatmap(runs[runs["num_train"] == 200])
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("div.") == 2  # lr 10 at epochs 1 and 3
    assert len(texts) == 3 * 2 and ax.get_ylabel() == "learning rate" and ax.get_xlabel() == "epoch"
    with pytest.raises(PoolingError, match=r"pool over num_train \(20, 50, 200\)"):
        lr_epoch_heatmap(runs)


def test_heatmap_facets_share_one_colour_scale(runs):
    fig = heatmap_facets(runs, col="num_train", title="t")
    heatmaps = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in heatmaps] == ["num_train = 20", "num_train = 50", "num_train = 200"]
    norms = {(m.norm.vmin, m.norm.vmax) for ax in heatmaps for m in ax.collections}
    assert len(norms) == 1


def test_loss_shapes_draws_each_loss_and_its_derivative():
    fig, axes = plt.subplots(1, 2)
    loss_shapes([0.5, 1.0], axes=axes)
    assert len(axes[0].get_lines()) == 3 + 1  # squared, two Huber, the zero line
    huber_derivative = axes[1].get_lines()[1].get_ydata()
    assert huber_derivative.max() == 1.0 and huber_derivative.min() == -1.0


def test_merged_legend_gathers_the_entries_of_every_panel():
    fig, axes = plt.subplots(1, 2)
    axes[0].plot([1, 2], [1, 2], label="a")
    axes[1].plot([1, 2], [1, 2], label="b")
    axes[1].plot([1, 2], [2, 1], label="a")
    merged_legend(axes, axes[1], title="t")
    assert _labels(axes[1]) == ["a", "b"] and axes[0].get_legend() is None


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_save_figure_writes_the_format_asked_reproducibly(tmp_path, runs, suffix):
    def draw():
        fig, ax = plt.subplots()
        error_curve(runs[runs["epoch"] == 3], x="num_train", y="w_err_norm", hue="lr", ax=ax)
        return fig

    (tmp_path / "a").mkdir()
    first = save_figure(draw(), tmp_path / "a" / f"f{suffix}")
    assert first == [tmp_path / "a" / f"f{suffix}"] and [p.name for p in (tmp_path / "a").iterdir()] == [f"f{suffix}"]
    data = first[0].read_bytes()
    assert len(data) > 1000 and data[:4] in (b"\x89PNG", b"<?xm", b"%PDF")
    save_figure(draw(), tmp_path / "a" / f"f{suffix}")
    assert first[0].read_bytes() == data


def test_save_figure_writes_several_formats_and_refuses_others(tmp_path, runs):
    fig, ax = plt.subplots()
    written = save_figure(fig, tmp_path / "f.png", formats=(".png", ".svg"))
    assert [p.name for p in written] == ["f.png", "f.svg"] and all(p.is_file() for p in written)
    with pytest.raises(ParameterError, match=r"a path ending in \.png, \.svg or \.pdf\. Got '.*f\.jpg'"):
        save_figure(plt.figure(), tmp_path / "f.jpg")


def test_counts_of_points_that_lost_runs_are_stacked_not_overprinted():
    """Two lrs lose a run at the same point with the same median: their a/b labels, each in its
    colour, sit one above the other; a point elsewhere keeps the usual place, left of the point
    at the right edge (where a label right of it would be cut off)."""
    from matplotlib.text import Annotation

    rows = [
        dict(num_train=n, lr=lr, w_err_norm=1.0 + 0.01 * r + (n == 1000) * 10, diverged=(r == 0 and n > 10))
        for lr in (0.1, 0.2)
        for n in (10, 100, 1000)
        for r in range(4)
        if not (lr == 0.2 and n == 1000)
    ]
    ax = error_curve(pd.DataFrame(rows), x="num_train", y="w_err_norm", hue="lr", theory=False)
    labels = [(a.get_text(), a.xy[0], a.xyann) for a in ax.texts if isinstance(a, Annotation)]
    at_100 = sorted(offset for text, x, offset in labels if x == 100)
    assert [text for text, _, _ in labels] == ["3/4"] * 3 and len(at_100) == 2
    assert at_100[0][1] == 3 and at_100[1][1] - at_100[0][1] >= 7  # stacked
    assert [offset for _, x, offset in labels if x == 1000] == [(-3, 3)]
    assert [a.get_horizontalalignment() for a in ax.texts if isinstance(a, Annotation) and a.xy[0] == 1000] == ["right"]
    assert {a.get_horizontalalignment() for a in ax.texts if isinstance(a, Annotation) and a.xy[0] == 100} == {"left"}
    plt.close("all")


def test_error_facets_wraps_a_long_row_of_panels(runs):
    """Eleven sizes on col would be one row eleven panels wide: it wraps at COL_WRAP a row."""
    from study.plots import COL_WRAP

    at = runs[(runs["epoch"] == 3) & (runs["lr"] == 0.03)]
    wide = pd.concat([at.assign(num_train=at["num_train"] * k) for k in (1, 7, 49)], ignore_index=True)
    g = error_facets(wide, x="lr", y="w_err_norm", col="num_train", theory=False)
    titles = [ax.get_title() for ax in g.axes.flat]
    assert len(titles) == 9 and titles[:2] == ["num_train = 20", "num_train = 50"]
    assert len({round(ax.get_position().y0, 3) for ax in g.axes.flat}) == -(-9 // COL_WRAP)


@pytest.mark.parametrize("band", ["ci", "both"])
def test_the_band_is_the_medians_interval_by_default_and_says_so(band):
    """12 runs a point: the default band is the median's 95% interval, the order statistics of
    study.summaries.median_ranks (ranks 3 and 10 of 12); "both" adds the 10-90% spread, lighter."""
    from study.summaries import median_ranks

    df = run_grid(Grid(num_train=[20, 50], lr=[0.1], epoch=[2], replicates=12, num_val=20), n_jobs=1, progress=False)
    at = df[df["epoch"] == 2]
    ax = error_curve(at, x="num_train", y="w_err_norm", theory=False, band=band)
    fills = [c for c in ax.collections if len(c.get_paths()) and len(c.get_paths()[0].vertices)]
    low, high = median_ranks(12)
    assert (low, high) == (3, 10)
    for _, values in at.groupby("num_train")["w_err_norm"]:
        ordered = np.sort(values.to_numpy())
        edges = np.concatenate([p.vertices[:, 1] for c in fills for p in c.get_paths()])
        assert np.isclose(edges, ordered[low - 1]).any() and np.isclose(edges, ordered[high - 1]).any()
    note = ax.texts[-1].get_text().splitlines()[0]
    labels = _labels(ax)
    if band == "ci":
        assert note == "median and its 95% interval of 12 runs per point"
        assert "band: the median's 95% interval" in labels and "band: 10–90% of the runs" not in labels
    else:
        assert note == "median, 95% interval (dark), 10–90% (light) of 12 runs per point"
        assert {"band: the median's 95% interval", "band: 10–90% of the runs"} <= set(labels)
    with pytest.raises(
        ParameterError, match=r"The 'band' parameter of error_curve must be one of \['ci', 'spread', 'both'\]"
    ):
        error_curve(at, x="num_train", y="w_err_norm", band="iqr")


def test_heatmap_facets_wrap_and_say_what_they_hold_fixed(runs):
    from study.plots import held_fixed

    wide = pd.concat([runs.assign(num_train=runs["num_train"] * k) for k in (1, 7)], ignore_index=True)
    fig = heatmap_facets(wide, col="num_train", title="six sizes")
    shown = [ax for ax in fig.axes if ax.get_title().startswith("num_train = ")]
    assert len(shown) == 6 and len({round(ax.get_position().y0, 2) for ax in shown}) == 2  # 4, then 2
    assert fig.texts[0].get_text() == "six sizes\n" + held_fixed(wide, ["lr", "epoch", "num_train"])
    assert held_fixed(wide, ["lr", "epoch", "num_train"]).startswith(
        "held fixed: num_inputs = 2, loss = squared, reduction"
    )
    assert held_fixed(runs[runs["epoch"] == 3], ["num_train", "lr"]).startswith(
        "held fixed: epoch 3, num_inputs = 2, loss = squared"
    )


def test_named_figures_of_the_exercises_raw_tables(quick):
    from study.plots import draw_figure

    out, _ = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex4_lr_epochs.parquet")
    fig = draw_figure(raw, "error-vs-epoch")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and fig.legends[0].get_title().get_text() == "lr"
    assert len(draw_figure(raw, "heatmap").axes) == 2  # the heatmap and its colour bar
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


def test_a_named_figure_refuses_unknown_names_and_columns(quick):
    from study.plots import draw_figure

    out, _ = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex4_lr_epochs.parquet")
    with pytest.raises(
        ValueError,
        match=r"The 'figure' parameter of draw_figure must be one of \['error-vs-num_train', 'error-vs-epoch', "
        r"'error-vs-lr', 'heatmap', 'nested-loop'\]\. Got 'ex4_lr_epochs'",
    ):
        draw_figure(raw, "ex4_lr_epochs")  # an exercise's own: study.exercises.exercise_figure
    with pytest.raises(
        ValueError, match=r"The 'y' parameter of draw_figure must be a column of the table\. Got 'nope'"
    ):
        draw_figure(raw, "heatmap", y="nope")


def test_a_figures_title_can_be_given_and_the_held_fixed_line_stays(runs):
    from study.plots import draw_figure, draw_xy

    fig = draw_xy(runs, x="num_train", hue="lr", epoch=3, title="my title")
    assert (
        fig.texts[0].get_text() == "my title\nheld fixed: epoch 3, num_inputs = 2, loss = squared, reduction = mean, "
        "batch_size = 32, noise = 0.01, noise_kind = gaussian"
    )
    made = draw_figure(runs, "error-vs-lr", epoch=3)
    assert (
        made.texts[0]
        .get_text()
        .startswith("‖ŵ − w‖₂ against lr; epoch 3\nheld fixed: epoch 3, num_inputs = 2, loss = squared")
    )


# --- the nested-loop plot ---------------------------------------------------------------------------


def _strips(fig) -> dict:
    """A nested-loop plot's strips, by factor: the level index of each cell, as drawn."""
    return {
        s.get_ylabel(): next(line for line in s.get_lines() if line.get_gid() == "levels").get_ydata()[:-1]
        for s in fig.axes[0].child_axes
    }


def _drawn(fig, gid: str) -> np.ndarray:
    """One value per cell of the panel's step line ``gid`` (its last point repeats the last cell)."""
    return next(line for line in fig.axes[0].get_lines() if line.get_gid() == gid).get_ydata()[:-1]


def test_nested_loop_puts_the_cells_in_nested_order_with_each_cells_median(losses):
    """The first factor is the outermost loop: the strips' steps are the product of the levels
    (each factor's in the table's order), and the line is pandas' median of each cell's runs."""
    import itertools

    order = ["noise_kind", "num_train", "loss"]
    fig = nested_loop(losses, order=order)
    levels = {"noise_kind": ["gaussian", "outliers"], "num_train": [50, 200, 1000], "loss": ["squared", "huber"]}
    cells = list(itertools.product(*levels.values()))  # itertools.product: the last factor fastest
    strips = _strips(fig)
    assert list(strips) == order
    for j, factor in enumerate(order):
        np.testing.assert_array_equal(strips[factor], [levels[factor].index(cell[j]) for cell in cells])
    kept = losses[~losses["diverged"]]
    expected = [
        kept[(kept["noise_kind"] == k) & (kept["num_train"] == n) & (kept["loss"] == loss)]["w_err_norm"].abs().median()
        for k, n, loss in cells
    ]
    np.testing.assert_allclose(_drawn(fig, "median"), expected)
    streams = losses.drop_duplicates("seed")  # least squares: once per data stream, whatever the loss
    floor = [
        streams[(streams["noise_kind"] == k) & (streams["num_train"] == n)]["ols_w_err_norm"].median()
        for k, n, _ in cells
    ]
    np.testing.assert_allclose(_drawn(fig, "floor"), floor)
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_xlim() == (-0.5, len(cells) - 0.5)
    assert (
        fig.texts[0]
        .get_text()
        .startswith(
            "‖ŵ − w‖₂ in every cell, in nested order; epoch 20 (the last "
            "checkpoint)\nheld fixed: epoch 20, num_inputs = 2, lr = 0.1"
        )
    )
    assert list(_strips(nested_loop(losses))) == ["num_train", "noise_kind", "loss"]  # by default the data's first


def test_nested_loop_marks_and_counts_diverged_cells_and_takes_epoch_as_a_factor(runs):
    """lr 10 diverges: its cells have no median, a mark at the top, and the note counts its
    runs; with epoch among the factors every checkpoint is a level, the start (epoch 0) too."""
    fig = nested_loop(runs, order="num_train,lr")
    medians = _drawn(fig, "median")
    at = runs[runs["epoch"] == 3]
    assert np.isnan(medians[2::3]).all() and np.isfinite(np.delete(medians, np.s_[2::3])).all()
    marks = next(line for line in fig.axes[0].get_lines() if line.get_label() == "no run of the cell shown (diverged)")
    np.testing.assert_array_equal(marks.get_xdata(), [2, 5, 8])
    n_diverged = int(at["diverged"].sum())
    assert f"left out: {n_diverged} diverged (of {len(at)})" in fig.axes[0].texts[-1].get_text()
    every = _strips(nested_loop(runs, order=["lr", "num_train", "epoch"]))
    np.testing.assert_array_equal(every["epoch"], [0, 1, 2] * 9)
    np.testing.assert_array_equal(every["lr"], np.repeat([0, 1, 2], 9))
    with pytest.raises(
        ParameterError,
        match=r"The 'order' parameter of nested_loop must be axes that vary in the "
        r"table \(num_train, lr\), each once, outermost first\. Got 'epoch' instead\.",
    ):
        nested_loop(runs, order=["num_train", "lr", "epoch"], epoch=3)  # one checkpoint chosen: epoch is no factor


def test_nested_loop_refuses_to_pool_and_an_order_that_is_not_the_tables_axes(losses):
    with pytest.raises(
        PoolingError,
        match=r"nested_loop would pool over noise_kind \(gaussian, outliers\); add "
        r"them to order",
    ) as caught:
        nested_loop(losses, order=["num_train", "loss"])
    assert caught.value.axes == {"noise_kind": ["gaussian", "outliers"]}
    allowed = r"must be axes that vary in the table \(num_train, loss, noise_kind\), each once, outermost first\. "
    for order, bad in (
        (["num_train", "foo", "loss"], "foo"),
        ("loss,noise_kind,loss", "loss"),
        ("num_train,loss,noise_kind,reduction", "reduction"),
        ("num_train,,loss", ""),
    ):
        with pytest.raises(ParameterError, match=rf"The 'order' parameter of nested_loop {allowed}Got '{bad}' instead"):
            nested_loop(losses, order=order)
    with pytest.raises(ParameterError, match=r"The 'band' parameter of nested_loop must be one of"):
        nested_loop(losses, band="iqr")


def test_sgd_floors_are_short_dashes_at_the_right_each_labelled_with_its_lr(runs):
    """Against epoch, each lr's noise floor spans the right 30% of the (log) axis, beside the
    line's end, labelled with its lr in its colour."""
    from matplotlib.text import Annotation

    stable = runs[runs["lr"] < 1]
    ax = error_curve(
        stable[stable["num_train"] == 200], x="epoch", y="w_err_norm", hue="lr", ax=plt.figure().gca(), logx=True
    )
    dashes = [
        line
        for line in ax.get_lines()
        if line.get_linestyle() == "--" and line.get_color() != "black" and len(line.get_xdata()) == 2
    ]
    floors = {
        float(np.sqrt(theory.sgd_stationary_w_err_sq(lr, 32, 2, float(theory.noise_variance(0.01))))): lr
        for lr in (0.03, 0.3)
    }
    drawn = {round(float(line.get_ydata()[0]), 12): line for line in dashes}
    assert sorted(drawn) == sorted(round(f, 12) for f in floors)
    for line in dashes:
        start, end = line.get_xdata()
        assert end == 3 and start == pytest.approx(1 * 3**0.7)  # epochs 1 to 3: the right 30% in log
    labels = {a.get_text(): a.xy for a in ax.texts if isinstance(a, Annotation) and "/" not in a.get_text()}
    assert set(labels) == {"0.03", "0.3"}
    plt.close("all")


def test_a_panels_note_takes_the_corner_its_lines_leave_empty():
    """Errors that fall with n fill the upper left and the lower right: the note goes to a
    corner that is empty (upper right or lower left), not over the lines."""
    rows = [
        dict(num_train=n, lr=0.1, w_err_norm=100.0 / n * (1 + 0.01 * r), diverged=False, replicate=r, seed=r)
        for n in (10, 30, 100, 300, 1000, 3000, 10000)
        for r in range(8)
    ]
    ax = error_curve(pd.DataFrame(rows), x="num_train", y="w_err_norm", theory=False, ax=plt.figure().gca())
    note = next(t for t in ax.texts if "per point" in t.get_text())
    assert note.get_position() in [(0.99, 0.99), (0.01, 0.01)]
    plt.close("all")


def test_the_constant_lr_floor_is_drawn_for_plain_sgd_only():
    """Decay, momentum, weight decay or averaging change where SGD settles: the constant-lr
    floor is not drawn for them."""
    from study import Grid as G

    df = run_grid(
        G(
            num_train=[500],
            lr=[0.1],
            average_from=[None, 1],
            lr_decay=[0.0, 0.5],
            epoch=[2, 5, 10],
            replicates=3,
            num_val=20,
        ),
        n_jobs=1,
        progress=False,
    )
    floor = "theory: SGD noise floor, RMS (squared loss, online limit)"
    for (decay, average), rows in df.groupby(["lr_decay", "average_from"], observed=True):
        ax = error_curve(rows, x="epoch", y="w_err_norm", ax=plt.figure().gca())
        drawn = any(label.startswith(floor) for label in _labels(ax))
        assert drawn == (decay == 0 and average == "none"), (decay, average)
    plt.close("all")


def test_the_floor_says_it_leaves_out_a_ragged_last_minibatch_and_drop_last_takes_it_away():
    """512 = 16·32 examples, or 500 with drop_last: every step has 32 examples, as the theory's
    do. 500 without: each epoch ends on 20, which the legend says the floor leaves out."""
    from study import Grid as G

    floor = "theory: SGD noise floor, RMS (squared loss, online limit)"
    cases = {
        (512, False): floor,
        (500, True): floor,
        (500, False): floor + ",\nminibatches of batch_size only: not the ragged last one",
    }
    for (n, drop), label in cases.items():
        df = run_grid(
            G(num_train=[n], lr=[0.1], drop_last=[drop], epoch=[5, 10], replicates=3, num_val=20),
            n_jobs=1,
            progress=False,
        )
        ax = error_curve(df[df["epoch"] > 0], x="epoch", y="w_err_norm", ax=plt.figure().gca())
        assert [x for x in _labels(ax) if x.startswith(floor)] == [label], (n, drop)
    plt.close("all")
