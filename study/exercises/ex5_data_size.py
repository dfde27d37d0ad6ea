"""Exercise 5: the error against the amount of data, with least squares' n^(-1/2) beside it, and
why the sizes are log-spaced."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .. import theory
from ..analysis import Table, literal, open_table, quote
from ..fits import MIN_FIT_LEVELS, fit_power_law
from ..plots import (
    LABELS,
    PALETTE,
    error_curve,
    feature_count,
)
from ..selection import LEAST_SQUARES
from ..summaries import summarize
from .common import (
    Outcome,
    _at,
    _estimate,
    _noise_var,
    _one,
    _precision_text,
    _require,
)


def _fit_row(quantity: str, rows: Table, column: str, fit_from: float) -> tuple[dict, Any]:
    """One row of the slopes table, fitted over num_train >= fit_from with one unit per data
    stream (the figure's legend draws its slopes from the same rows, by the same function):
    SGD's over the runs that did not diverge, least squares' once per stream."""
    part = rows.filter(f"num_train >= {literal(fit_from)}").stream_values(
        ["num_train"], column, diverged=column not in LEAST_SQUARES, per_stream=column in LEAST_SQUARES
    )
    sizes = part["num_train"].nunique()
    row = {"quantity": quantity, "fit_from": fit_from, "sizes": sizes}
    if sizes < MIN_FIT_LEVELS:
        return {**row, "slope": np.nan, "prefactor": np.nan, "low": np.nan, "high": np.nan, "units": np.nan}, None
    fit = fit_power_law(part["num_train"], part["v"], units=part["seed"])
    return {
        **row,
        "slope": fit.slope,
        "prefactor": fit.prefactor,
        "low": fit.low,
        "high": fit.high,
        "units": fit.units,
    }, fit


def ex5_data_size(df: Any) -> Outcome:
    t = open_table(df)
    _require(t, "ex5_data_size", loss=("squared",))
    last = int(t.values("epoch")[-1])
    table = summarize(t, by=["num_train", "lr", "loss", "epoch"], ci=0.95)
    lrs = t.values("lr")
    lr = 0.03 if 0.03 in lrs else lrs[len(lrs) // 2]
    final = _at(t, epoch=last)
    squared = _at(final, loss="squared")
    seed_like = _at(squared, lr=lr)
    sizes = [int(n) for n in t.values("num_train")]
    # SGD's slope where its optimisation gap has closed: from n = 1000, or lower where fewer
    # than MIN_FIT_LEVELS sizes lie above it.
    big = min(1000, sizes[-MIN_FIT_LEVELS]) if len(sizes) >= MIN_FIT_LEVELS else sizes[0]
    # Least squares from every squared-loss run, one value per data stream: the rows and the
    # function the figure's grey line is fitted with.
    ols_row, ols = _fit_row("ols_w_err_norm", squared, "ols_w_err_norm", sizes[0])
    ols_b_row, ols_b = _fit_row("ols_b_err_abs", squared, "ols_b_err", sizes[0])
    slopes, sgd_fits = [ols_row, ols_b_row], {}
    for rate in lrs:
        part = _at(squared, lr=rate)
        row, sgd_fits[rate] = _fit_row(f"w_err_norm (SGD, squared, lr={rate:g}, epoch {last})", part, "w_err_norm", big)
        slopes.append(row)
    noise_var, d = _noise_var(t), feature_count(t)
    theory_slope = None
    if noise_var is not None and len(sizes) >= MIN_FIT_LEVELS and sizes[0] > d:
        medians = theory.ols_w_err_norm_quantile(0.5, np.array(sizes), d, noise_var)
        theory_slope = float(np.polyfit(np.log(sizes), np.log(medians), 1)[0])
        slopes.append(
            {
                "quantity": "ols_w_err_norm (theory: median, Gaussian noise)",
                "fit_from": sizes[0],
                "sizes": len(sizes),
                "slope": theory_slope,
                "prefactor": np.nan,
                "low": np.nan,
                "high": np.nan,
                "units": np.nan,
            }
        )
    slopes = pd.DataFrame(slopes)

    fig, axes = plt.subplots(2, 2, figsize=(13.5, 12))
    error_curve(
        squared,
        x="num_train",
        y="w_err_norm",
        hue="lr",
        floor="ols_w_err_norm",
        fit_from=big,
        ax=axes[0, 0],
        legend="below",
        legend_title=f"lr (squared loss, epoch {last}); SGD slopes for n ≥ {big:,}",
    )
    axes[0, 0].set_title("‖ŵ − w‖ against the amount of data")
    components = [
        seed_like.derive(quantity=literal(LABELS[c]), value=f"abs({quote(c)})")
        for c in ("w_err_0", "w_err_1", "b_err")
        if c in seed_like.columns
    ]
    parts = components[0].union(*components[1:])
    error_curve(
        parts,
        x="num_train",
        y="value",
        hue="quantity",
        ax=axes[0, 1],
        ylabel="absolute error",
        legend_title=f"component (lr {lr:g}, squared, epoch {last})",
        legend="upper right",
    )
    axes[0, 1].set_title("each component of w, and b")
    split = seed_like.derive(part=literal("total ‖ŵ − w‖"), value="w_err_norm").union(
        seed_like.derive(part=literal("optimisation gap ‖ŵ − ŵ_ols‖"), value="gap_w_norm"),
        seed_like.derive(part=literal("statistical error ‖ŵ_ols − w‖"), value="ols_w_err_norm", diverged="FALSE"),
    )
    error_curve(
        split,
        x="num_train",
        y="value",
        hue="part",
        ax=axes[1, 0],
        ylabel="‖·‖₂",
        legend="upper right",
        hue_order=["total ‖ŵ − w‖", "optimisation gap ‖ŵ − ŵ_ols‖", "statistical error ‖ŵ_ols − w‖"],
        legend_title=f"lr {lr:g}, squared, epoch {last}",
    )
    axes[1, 0].set_title("the error split: optimisation gap and statistical error")
    spacing = _log_spacing_panel(squared, sizes, axes[1, 1])
    fig.suptitle(
        f"Exercise 5: estimation error against the amount of data ({len(sizes)} sizes from {sizes[0]:,} "
        f"to {sizes[-1]:,})"
    )
    fig.tight_layout()

    def med(n, column):
        return _estimate(_at(seed_like, num_train=n), column)

    def steps(n):
        return int(_one(_at(seed_like, num_train=n), "steps"))

    small = sizes[0]
    sgd = sgd_fits.get(lr)
    floor_text = ""
    if noise_var is not None:
        rms = float(
            np.sqrt(
                theory.sgd_stationary_w_err_sq(
                    lr, int(_one(seed_like, "batch_size")), d, noise_var, str(_one(seed_like, "reduction"))
                )
            )
        )
        floor_text = f"theory's floor for online SGD at lr {lr:g}: {rms:.2g} RMS, dashed on the figure"
    ols_text = f"falls as n^{ols.slope:.2f}" if ols is not None and ols.high < 0 else None
    answer = (
        (
            f"Least squares on the same data {ols.trend('n')} for w (one value per data set, {ols.units} data sets)"
            if ols is not None
            else f"Least squares: {len(sizes)} sizes are too few to fit a slope to"
        )
        + (
            f"; theory's median for Gaussian noise gives {theory_slope:.2f} over the same sizes (−1/2 for large n, "
            f"steeper near n = d + 1: ‖ŵ_ols − w‖² ~ σ² d/(n − d) · F(d, n − d))"
            if theory_slope is not None
            else ""
        )
        + (f"; for b it {ols_b.trend('n')}" if ols_b is not None else "")
        + (". At slope −1/2, four times the data halves the error" if ols_text else "")
        + f". SGD for a fixed {last} epochs gains twice from more data, more information and more steps: at lr "
        f"{lr:g} its median ‖ŵ − w‖ went from {med(small, 'w_err_norm')} at n = {small:,} (only {steps(small)} "
        f"steps, optimisation gap {med(small, 'gap_w_norm')}) to {med(sizes[-1], 'w_err_norm')} at "
        f"n = {sizes[-1]:,} ({steps(sizes[-1])} steps, gap {med(sizes[-1], 'gap_w_norm')}, least squares "
        f"{med(sizes[-1], 'ols_w_err_norm')}); "
        + (
            f"from n = {big:,} on ({sgd.levels} sizes) it {sgd.trend('n')}"
            if sgd is not None
            else f"there are too few sizes from n = {big:,} on to fit its slope"
        )
        + (
            f": within this grid more data no longer lowers it clearly, as expected once SGD sits at the noise floor "
            f"of a constant lr ({floor_text})"
            if sgd is not None and sgd.high >= 0 and floor_text
            else ""
        )
        + (
            f", clearly flatter than least squares' (its interval lies above theirs), as expected once SGD nears the "
            f"noise floor of a constant lr ({floor_text})"
            if sgd is not None and ols is not None and sgd.high < 0 and sgd.low > ols.high and floor_text
            else ""
        )
        + f". Log spacing is right because the error is a power law: equal ratios of n give equal steps on a log-log "
        f"plot, so {spacing['count']} sizes from {sizes[0]:,} to {sizes[-1]:,} cover {spacing['log_decades']:.1f} "
        f"decades, over which the least-squares error changes {spacing['log_change']:.0f}-fold, while "
        f"{spacing['count']} evenly spaced sizes ({spacing['linear'][0]:,}, {spacing['linear'][1]:,}, …, "
        f"{spacing['linear'][-1]:,}) cover {spacing['linear_decades']:.1f} decades, where it changes "
        f"{spacing['linear_change']:.1f}-fold, and never see the small-data regime where it changes most. "
        + _precision_text(t)
    )
    return Outcome({"ex5_data_size": table, "ex5_slopes": slopes}, {"ex5_data_size": fig}, answer)


def _log_spacing_panel(runs: Table, sizes: list[int], ax: plt.Axes) -> dict:
    """Why the hint's log spacing serves: the same budget of sizes, spread two ways, on the
    least-squares medians (one value per data stream). Returns what the panel shows, for the
    answer to quote."""
    points, _ = runs.point_stats(["num_train"], "ols_w_err_norm", diverged=False, per_stream=True)
    curve = points.set_index("num_train")["median"]
    ax.plot(curve.index, curve.values, color="0.45", marker="s", markersize=3, label="least squares, median (measured)")
    logs = np.array(sizes)
    linear = np.linspace(sizes[-1] / len(sizes), sizes[-1], len(sizes)).round().astype(int)
    y_log = np.exp(np.interp(np.log(logs), np.log(curve.index), np.log(curve.values)))
    y_lin = np.exp(np.interp(np.log(linear), np.log(curve.index), np.log(curve.values)))
    colors = sns.color_palette(PALETTE, 2)
    shown = ", ".join(f"{v:,}" for v in logs[:3]) + (f", …, {logs[-1]:,}" if len(logs) > 3 else "")
    ax.plot(logs, y_log, "o", color=colors[0], markersize=7, label=f"{len(logs)} log-spaced sizes: {shown}")
    ax.plot(
        linear,
        y_lin,
        "s",
        color=colors[1],
        markerfacecolor="none",
        markersize=10,
        markeredgewidth=1.5,
        label=f"{len(linear)} evenly spaced sizes: {linear[0]:,}, {linear[1]:,}, …, {linear[-1]:,}",
    )
    ax.set(xscale="log", yscale="log", xlabel=LABELS["num_train"], ylabel="least squares ‖ŵ_ols − w‖₂")
    ax.set_title(f"why log spacing: the same {len(sizes)} sizes, spread two ways")
    ax.legend(fontsize="small", loc="upper right")
    return {
        "count": len(sizes),
        "linear": [int(v) for v in linear],
        "log_decades": float(np.log10(logs[-1] / logs[0])),
        "linear_decades": float(np.log10(linear[-1] / linear[0])),
        "log_change": float(y_log.max() / y_log.min()),
        "linear_change": float(y_lin.max() / y_lin.min()),
    }
