"""The exercises of d2l §3.5 as studies: a grid, tables, figures and a short answer each.

Each study reads its grid from ``study/specs/<name>.toml`` (package data), runs it with :func:`run_grid`
(the raw table goes to ``results/raw/<name>.parquet``, git-ignored), and writes its summary tables
to ``results/``, its figures to ``figures/`` (PNG, or the formats asked for), and its answer to
``results/answers.md``. Every number in a figure or an answer is computed from the table the
study ran: counts, ranges, slopes and their signs. ``quick=True`` shrinks every grid (fewer
replicates, sizes and epochs) for a preview in seconds.
"""

from __future__ import annotations

import functools
import math
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from . import theory
from .analysis import Table, literal, open_table, quote
from .data import OUTLIER_FRACTION, SyntheticRegressionData
from .exercise_runner import LAYOUT, SPECS, check_numbers, run_studies
from .grid import Grid, w_vector
from .model import LinearRegression
from .plots import (
    LABELS,
    PALETTE,
    error_curve,
    error_facets,
    feature_count,
    heatmap_facets,
    loss_shapes,
    lr_epoch_heatmap,
    merged_legend,
    save_figure,
)
from .results import (
    LEAST_SQUARES,
    MIN_FIT_LEVELS,
    SUMMARY_DIGITS,
    ParameterError,
    PoolingError,
    at_epoch,
    axes_of,
    compare,
    fewest_runs,
    fit_power_law,
    median_ranks,
    precision_shortfall,
    summarize,
    values_text,
    write_csv,
)
from .runner import run_grid
from .train import Trainer
from .vocabulary import RUN_AXES

__all__ = [
    "STUDIES",
    "Outcome",
    "run_exercises",
    "seed_example",
    "GENERIC_FIGURES",
    "figure_names",
    "draw_figure",
    "draw_xy",
    "gradient_access",
    "huber_step_check",
    "step_ratio",
    "check_numbers",
    "LAYOUT",
]


def seed_example(
    lr: float = 0.03, loss: str = "squared", epochs: int = 3, num_train: int = 1000, seed: int = 0
) -> dict:
    """The section's own example (``study demo``): w = [2, -3.4], b = 4.2, trained by the
    reference loop, and its errors as the book prints them (w − ŵ, b − b̂), beside least
    squares on the same data."""
    model = LinearRegression(lr=lr, loss=loss)
    data = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2, num_train=num_train, seed=seed)
    Trainer(max_epochs=epochs).fit(model, data)
    w, b = model.get_w_b()
    w_ols, b_ols = theory.least_squares(data.X_train, data.y_train)
    return {
        "w": data.w - w.reshape(data.w.shape),
        "b": data.b - b,
        "ols_w": (data.w.double() - w_ols).numpy(),
        "ols_b": data.b - float(b_ols),
    }


@dataclass
class Outcome:
    """What a study produced: tables and figures by file stem, and its answer in markdown."""

    tables: dict[str, pd.DataFrame]
    figures: dict[str, plt.Figure]
    answer: str


def _at(t: Table, **where: Any) -> Table:
    """The rows whose columns hold the given values."""
    return t.select({column: [value] for column, value in where.items()})


def _one(t: Table, column: str) -> Any:
    """The first value a column takes (a setting the grid holds fixed, where it is one)."""
    return t.values(column)[0]


def _require(t: Table, figure: str, **needed: Sequence) -> None:
    """Refuse a table that lacks what an exercise's figure is drawn from."""
    for axis, values in needed.items():
        have = t.values(axis)
        missing = [v for v in values if v not in have]
        if missing:
            raise ParameterError(
                "figure",
                "parameter of draw_figure",
                f"a figure the table can draw ({figure} needs {axis} = {values_text(list(values))}; "
                f"the table has {axis} = {values_text(have)})",
                figure,
            )


def _noise_var(t: Table) -> float | None:
    """σ² where the table's noise is one Gaussian level, else None (theory's quantiles need it)."""
    if t.values("noise_kind") != ["gaussian"] or len(t.values("noise")) != 1:
        return None
    return float(theory.noise_variance(float(_one(t, "noise")), "gaussian"))


# --- numbers with their precision ------------------------------------------------------------

#: The precision the exercises' replicates were chosen for (``study run --target-precision``):
#: the 95% interval of each cell's median ‖ŵ − w‖ within ±15% of it, at the last epoch.
TARGET_PRECISION = 0.15


@dataclass(frozen=True)
class Estimate:
    """A median (or a median ratio) and its 95% interval, from order statistics (NaN bounds
    where there are too few units for one)."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        if np.isnan(self.low) or np.isnan(self.high):  # an infinite bound (diverged runs) is a bound
            return f"{_sig(self.value)} (too few runs for an interval)"
        # two significant digits, or as many more (up to 4) as the interval needs to show its width
        digits = 2
        while digits < 4 and self.low < self.high < np.inf and _sig(self.low, digits) == _sig(self.high, digits):
            digits += 1
        return f"{_sig(self.value, digits)} [{_sig(self.low, digits)}, {_sig(self.high, digits)}]"

    def factor(self) -> str:
        """A ratio in words that claim no more than its interval: '×2.9 [2.7, 3.1]', with 'no
        clear difference' where the interval holds 1."""
        text = f"×{self}"
        if np.isnan(self.low) or np.isnan(self.high):
            return text  # "too few runs for an interval" says it already
        return text if self.clear() else f"{text} (no clear difference)"

    def clear(self) -> bool:
        """Whether the interval (of a ratio) excludes 1."""
        return bool(self.low > 1 or self.high < 1)


def _sig(value: float, digits: int = 2) -> str:
    """``digits`` significant digits, trailing zeros kept (1.0, 0.00040), as g-format above 1e5
    or below 1e-7."""
    if not np.isfinite(value) or value == 0 or not 1e-7 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    rounded = float(f"{value:.{digits}g}")  # 0.1996 as 0.20, not 0.2
    if abs(rounded) >= 10 ** (digits - 1):
        return f"{rounded:.0f}"  # 230, not 2.3e+02
    decimals = digits - 1 - math.floor(math.log10(abs(rounded)))
    return f"{rounded:.{decimals}f}"  # trailing zeros kept: 0.030, 1.0, 0.00001


def _interval(values: np.ndarray, ci: float = 0.95) -> Estimate:
    """The median of independent values and its distribution-free interval (median_ranks)."""
    v = np.sort(np.asarray(values, dtype=float))
    if not len(v):
        return Estimate(np.nan, np.nan, np.nan)
    ranks = median_ranks(len(v), ci)
    low, high = (v[ranks[0] - 1], v[ranks[1] - 1]) if ranks else (np.nan, np.nan)
    return Estimate(float(np.median(v)), float(low), float(high))


def _estimate(t: Table, column: str, *, per_stream: bool = False) -> Estimate:
    """The median |column| of a selection at one checkpoint with its 95% interval: SGD's over
    the runs that did not diverge, least squares' over one value per data stream (it never diverges, and the runs
    on one data set share it);
    ``per_stream`` takes one value per stream for any column the runs of a stream share (the
    start, at epoch 0), so that the interval counts independent units only."""
    per_stream = per_stream or column in LEAST_SQUARES
    points, _ = t.point_stats(
        ["epoch"], column, diverged=not per_stream, per_stream=per_stream, ranks=lambda n: median_ranks(n, 0.95)
    )
    if len(points) != 1:
        raise PoolingError({"epoch": list(points["epoch"])}, f"an estimate of {column}")
    row = points.iloc[0]
    return Estimate(float(row["median"]), float(row["ci_lo"]), float(row["ci_hi"]))


def _ratio(later: Table, earlier: Table, column: str) -> Estimate:
    """The median, over runs, of one run's |column| in ``later`` over the same run's in
    ``earlier`` (two checkpoints, or two settings of one data stream: paired), with its 95%
    interval. A run that diverged in ``later`` has an infinite ratio: it counts, never dropped."""
    keys = [k for k in ("replicate", "seed") if k in later.columns]
    fixed = [
        a
        for a in RUN_AXES
        if a in later.columns
        and len(later.values(a)) == 1 == len(earlier.values(a))
        and later.values(a) == earlier.values(a)
    ]
    join = ", ".join(quote(k) for k in [*keys, *fixed])
    value = f"CASE WHEN diverged THEN 'inf'::DOUBLE ELSE abs({quote(column)}::DOUBLE) END"
    pairs = later.query(
        f"SELECT a.v / b.v AS r FROM (SELECT {join}, {value} AS v FROM {later.relation}) a "
        f"JOIN (SELECT {join}, {value} AS v FROM {earlier.relation}) b USING ({join})"
    )
    return _interval(pairs["r"].to_numpy())


def _paired_columns(t: Table, top: str, bottom: str) -> Estimate:
    """The median over runs of |top| / |bottom| in the same row (SGD's error over least squares'
    on the same data set), with its 95% interval; a diverged run counts as an infinite ratio."""
    pairs = t.query(
        f"SELECT CASE WHEN diverged THEN 'inf'::DOUBLE ELSE abs({quote(top)}::DOUBLE) / "
        f"abs({quote(bottom)}::DOUBLE) END AS r FROM {t.relation}"
    )
    return _interval(pairs["r"].to_numpy())


def _ragged_text(n: int, batch: int) -> str:
    """Why an end-of-epoch error may sit above theory's floor: the epoch's last, smaller minibatch."""
    ragged = n % batch
    if not ragged:
        return ""
    return (
        f"; the error is measured at the end of an epoch, which ends on a minibatch of {ragged} ({n} = "
        f"{n // batch}·{batch} + {ragged}), whose step is noisier than the theory's minibatches of {batch}"
    )


def _compared(t: Table, **kwargs: Any) -> dict:
    """compare()'s rows by the factor's level: each an Estimate of the paired median ratio."""
    rows = compare(t, **kwargs)
    factor = kwargs["factor"]
    return {row[factor]: Estimate(row["ratio"], row["ratio_lo"], row["ratio_hi"]) for _, row in rows.iterrows()}


def _precision_text(t: Table) -> str:
    """What the study's replicates give: the widest 95% interval of a cell's median ‖ŵ − w‖ at
    the last epoch, relative to the median, over the cells where most runs converged."""
    cells = precision_shortfall(t, target=TARGET_PRECISION)
    kept = cells[~cells["diverging"]]
    replicates = len(t.values("replicate"))
    skipped = int(cells["diverging"].sum())
    but = f" but the {skipped} where most runs diverged" if skipped else ""
    text = (
        f"Precision: {replicates} replicates (data sets) per cell; brackets are 95% intervals, and a ratio's is "
        f"paired by data set. "
    )
    if not len(kept) or not np.isfinite(kept["relative"]).all():
        return text + (
            f"Some cells have too few runs for an interval of their median (at least {fewest_runs(0.95)} are "
            f"needed): these numbers are a preview."
        )
    worst = kept["relative"].max()
    if worst <= TARGET_PRECISION:
        return text + (
            f"Enough for ±{TARGET_PRECISION:.0%}, as `study run --target-precision {TARGET_PRECISION:g}` "
            f"chose them: at the last epoch the median ‖ŵ − w‖ of every cell{but} is within ±{worst:.0%} "
            f"of itself."
        )
    return text + (
        f"At the last epoch the median ‖ŵ − w‖ of a cell{but} is within ±{worst:.0%} of itself at worst, "
        f"short of ±{TARGET_PRECISION:.0%}: `study run SPEC --target-precision {TARGET_PRECISION:g}` grows "
        f"the replicates until it is."
    )


def _grid_step(values: Sequence[float]) -> float:
    """The typical ratio between neighbouring values of a log-spaced axis."""
    v = np.sort(np.unique(np.asarray(values, dtype=float)))
    return float(np.exp(np.median(np.diff(np.log(v))))) if len(v) > 1 else float("nan")


# --- 1. mean vs sum ------------------------------------------------------------------------


def ex1_reduction(df: Any) -> Outcome:
    t = open_table(df)
    _require(t, "ex1_reduction", reduction=("mean", "sum"))
    epochs = t.values("epoch")
    epoch = 3 if 3 in epochs else int(epochs[-1])
    at = _at(t, epoch=epoch)
    bs = int(_one(at, "batch_size"))
    n = int(_one(at, "num_train"))
    d = feature_count(t)
    table = summarize(at, by=["reduction", "lr"], ci=0.95)
    rows = []
    for reduction, cells in table.groupby("reduction", observed=True):
        stable = cells[cells["diverged"] == 0]
        diverging = cells[cells["diverged"] > cells["count"] / 2]
        best = stable.loc[stable["w_err_norm_median"].idxmin()] if len(stable) else None
        rows.append(
            {
                "reduction": reduction,
                "epoch": epoch,
                "best_lr": best["lr"] if best is not None else np.nan,
                "best_w_err_norm_median": best["w_err_norm_median"] if best is not None else np.nan,
                "largest_stable_lr": stable["lr"].max() if len(stable) else np.nan,
                "smallest_diverging_lr": diverging["lr"].min() if len(diverging) else np.nan,
                "theory_stability_edge": float(theory.sgd_stability_edge(bs, d, str(reduction))),
            }
        )
    best = pd.DataFrame(rows)
    b = best.set_index("reduction")
    # How sharp the best lr is: the lrs whose error, on the same data sets, is not clearly above
    # the best's (the paired ratio's interval reaches 1 or below).
    near = {}
    for reduction, lr in b["best_lr"].items():
        if np.isnan(lr):
            continue
        ratios = _compared(_at(at, reduction=reduction), factor="lr", baseline=lr)
        close = sorted([lr, *(level for level, r in ratios.items() if not r.low > 1)])
        told = all(not np.isnan(r.low) for r in ratios.values())
        near[reduction] = (_estimate(_at(at, reduction=reduction, lr=lr), "w_err_norm"), close, told)

    def best_text(reduction):
        if reduction not in near:
            return "none (every lr diverged)"
        estimate, close, told = near[reduction]
        others = (
            "too few runs to tell which other lrs are clearly worse"
            if not told
            else f"lrs {close[0]:.3g} to {close[-1]:.3g} are not clearly worse on the same data sets"
            if len(close) > 1
            else "every other lr is clearly worse on the same data sets"
        )
        return f"{b.loc[reduction, 'best_lr']:.3g} with `{reduction}` (median ‖ŵ − w‖ {estimate}; {others})"

    ratio = b.loc["mean", "best_lr"] / b.loc["sum", "best_lr"]
    ratio_div = b.loc["mean", "smallest_diverging_lr"] / b.loc["sum", "smallest_diverging_lr"]

    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8), sharey=True)
    error_curve(at, x="lr", y="w_err_norm", hue="reduction", ax=axes[0], legend=False)
    axes[0].set_title(f"after {epoch} epochs (num_train={n}, batch_size={bs})")
    scaled = at.derive(step=f"CASE WHEN reduction = 'sum' THEN lr * {bs} ELSE lr END")
    error_curve(scaled, x="step", y="w_err_norm", hue="reduction", ax=axes[1], legend=False)
    axes[1].set_xlabel(f"lr × {bs} for sum, lr for mean (step per example)")
    axes[1].set_title("rescaled by the batch size")
    # Least squares is one number here (one data set per replicate, whatever the lr): a line.
    ols = _estimate(at, "ols_w_err_norm")
    for ax in axes:
        ax.axhline(ols.value, color="0.45", linewidth=1.2, label=f"least squares on the same data, median ({ols})")
    merged_legend(axes, axes[1], title="reduction")
    fig.suptitle("Exercise 1: the loss summed over the minibatch needs a learning rate batch_size times smaller")
    fig.tight_layout()
    ragged = n % bs
    step = _grid_step(at.values("lr"))
    answer = (
        f"Summing instead of averaging multiplies the gradient of a full minibatch by its size B = {bs}, so the "
        f"learning rate must be divided by B to take the same steps. Measured after {epoch} epochs on {n} "
        f"examples: the best lr was {best_text('mean')}, and {best_text('sum')}: a ratio of {ratio:.3g}; most runs "
        f"diverged from lr {b.loc['mean', 'smallest_diverging_lr']:.3g} "
        f"and {b.loc['sum', 'smallest_diverging_lr']:.3g} (ratio {ratio_div:.3g}); the grid's lrs are "
        f"{step:.2g} times apart, so the ratios are B to within that step. Theory for online SGD on the squared loss "
        f"(`study.theory.sgd_stability_edge`) puts the edge at lr {b.loc['mean', 'theory_stability_edge']:.2g} for "
        f"`mean` and {b.loc['sum', 'theory_stability_edge']:.2g} for `sum`, the same ratio B; the largest lr with no "
        f"diverged run was {b.loc['mean', 'largest_stable_lr']:.3g} and {b.loc['sum', 'largest_stable_lr']:.3g} (a finite "
        f"training set run for {epoch} epochs is not the online limit). Rescaled, the two curves lie on top of each "
        f"other except for the ragged last minibatch: {n} = {n // bs}·{bs} + {ragged}"
        + (
            f", and with `sum` that last step is {ragged}/{bs} as large as with `mean`, which weights its {ragged} "
            f"examples as much as a full batch. So lr_sum = lr_mean / B exactly when B divides num_train, and nearly "
            f"so otherwise. "
            if ragged
            else ", so every minibatch is full and lr_sum = lr_mean / B exactly. "
        )
        + _precision_text(t)
    )
    return Outcome({"ex1_reduction": table, "ex1_best_lr": best}, {"ex1_reduction": fig}, answer)


# --- 2. squared vs Huber -------------------------------------------------------------------


def _loss_label(t: Table) -> Table:
    """One label per loss: squared ignores sigma (its runs hold none: see
    vocabulary.APPLIES_ONLY; a table from before that rule has a copy of each squared run at
    every sigma, identical by common random numbers, of which the first is kept)."""
    sigmas = t.values("sigma")
    labels = " ".join(f"WHEN sigma = {literal(s)} THEN {literal(f'Huber σ={s:g}')}" for s in sigmas)
    kept = t.filter(f"loss = 'huber' OR sigma IS NULL OR sigma = {literal(sigmas[0])}")
    return kept.derive(loss_sigma=f"CASE WHEN loss = 'squared' THEN 'squared' ELSE (CASE {labels} END) END")


def step_ratio(sigma: float, residual: float | None = None) -> float:
    """The step of Huber (σ) relative to the squared loss at the same lr and residual, measured
    on the model's own losses (autograd on LinearRegression.loss): 1/(2σ) inside Huber's
    quadratic zone (|r| <= σ), since MSELoss (no 1/2) has gradient 2r and Huber r/σ there."""
    r = sigma / 2 if residual is None else residual

    def slope(loss: str) -> float:
        y_hat = torch.tensor([[r]], dtype=torch.float64, requires_grad=True)
        LinearRegression(lr=1.0, loss=loss, sigma=sigma).loss(y_hat, torch.zeros(1, 1, dtype=torch.float64)).backward()
        assert y_hat.grad is not None  # backward() above filled the leaf's gradient
        return float(y_hat.grad)

    return slope("huber") / slope("squared")


def huber_step_check(lr: float = 1.0, sigma: float = 1.0, epochs: int = 3) -> dict:
    """Huber (σ) at lr η against the squared loss at lr η/(2σ), on the same data and start, with
    w and b small enough that every residual stays inside Huber's quadratic zone from the first
    step: the largest difference of ŵ and b̂ over the runs (0: the same numbers)."""
    squared_lr = lr * step_ratio(sigma)
    grid = Grid(
        num_train=[200],
        lr=[squared_lr, lr],
        loss=["squared", "huber"],
        sigma=[sigma],
        epoch=[epochs],
        replicates=3,
        w=[0.05, -0.05],
        b=0.0,
        noise=[0.01],
        num_val=20,
        seed=5,
    )
    df = run_grid(grid, n_jobs=1, progress=False)
    assert df is not None  # without out, run_grid returns the table
    last = df[df["epoch"] == epochs]
    cols = [c for c in df.columns if c.startswith("w_hat_")] + ["b_hat"]
    a = last[(last["loss"] == "squared") & (last["lr"] == squared_lr)].sort_values("replicate")[cols].to_numpy()
    h = last[(last["loss"] == "huber") & (last["lr"] == lr)].sort_values("replicate")[cols].to_numpy()
    return {
        "lr": lr,
        "sigma": sigma,
        "squared_lr": squared_lr,
        "epochs": epochs,
        "runs": len(a),
        "max_abs_difference": float(np.abs(a - h).max()),
    }


def ex2_huber(df: Any) -> Outcome:
    raw = open_table(df)
    _require(raw, "ex2_huber", loss=("squared", "huber"), noise_kind=("gaussian", "outliers"))
    t = _loss_label(raw)
    epochs = t.values("epoch")
    last = int(epochs[-1])
    sizes = t.values("num_train")
    mid = 1000 if 1000 in sizes else int(np.median(sizes))
    table = summarize(t, by=["noise_kind", "loss_sigma", "num_train", "epoch"], ci=0.95)
    sigmas = _at(t, loss="huber").values("sigma")
    lr = float(_one(t, "lr"))
    # Near the solution every residual is inside Huber's quadratic zone, where Huber σ at lr η
    # steps as the squared loss at lr η/(2σ): measured on the model's losses, not assumed.
    ratios = {s: step_ratio(s) for s in sigmas}
    check = huber_step_check()
    steps_text = ", ".join(f"σ={s:g}: {lr * ratios[s]:.3g}" for s in sigmas)
    step_note = (
        f"squared = MSELoss, no ½: l′(r) = 2r. Huber: l′(r) = r/σ for |r| ≤ σ. Inside that zone Huber at "
        f"lr {lr:g} steps as squared at lr {lr:g}/(2σ) ({steps_text})."
    )

    fig_shapes, _ = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_shapes(sigmas, axes=fig_shapes.axes)
    fig_shapes.suptitle("Squared loss (MSELoss, no ½) and Huber's loss (3.5.1): Huber's derivative is bounded by 1")
    fig_shapes.tight_layout(rect=(0, 0.11, 1, 1))
    fig_shapes.text(0.5, 0.01, textwrap.fill(step_note, 110), ha="center", va="bottom", fontsize="small")

    fig, axes = plt.subplots(2, 2, figsize=(14, 8.8), sharey="row")
    order = ["squared", *[f"Huber σ={s:g}" for s in sigmas]]
    names = {"gaussian": "Gaussian noise", "outliers": f"{OUTLIER_FRACTION:.0%} gross outliers"}
    for col, kind in enumerate(["gaussian", "outliers"]):
        sub = _at(t, noise_kind=kind)
        legend: Literal[False] = False
        error_curve(
            _at(sub, num_train=mid).filter("epoch > 0"),
            x="epoch",
            y="w_err_norm",
            hue="loss_sigma",
            hue_order=order,
            floor="ols_w_err_norm",
            ax=axes[0, col],
            legend_title="loss",
            legend=legend,
        )
        axes[0, col].set_title(f"{names[kind]}: num_train={mid}, lr={lr:g}")
        error_curve(
            _at(sub, epoch=last),
            x="num_train",
            y="w_err_norm",
            hue="loss_sigma",
            hue_order=order,
            floor="ols_w_err_norm",
            ax=axes[1, col],
            legend_title="loss",
            legend=legend,
        )
        axes[1, col].set_title(f"{names[kind]}: after {last} epochs, lr={lr:g}")
    for row in range(2):
        merged_legend(axes[row], axes[row, 1], title="loss")
        # The legend serves both panels of its row; theory is drawn on the Gaussian one only.
        for text in axes[row, 1].get_legend().get_texts():
            if text.get_text().startswith("theory:"):
                text.set_text(f"{text.get_text()}, left panel only")
    fig.suptitle("Exercise 2: Huber's loss is slow from a far start but ignores gross outliers")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.text(
        0.5,
        0.005,
        textwrap.fill(
            step_note + " Theory (dashed) is drawn for Gaussian noise and, for SGD, the squared loss only.", 150
        ),
        ha="center",
        va="bottom",
        fontsize="small",
    )

    def est(kind, label, epoch, n=mid):
        return _estimate(_at(t, noise_kind=kind, loss_sigma=label, epoch=epoch, num_train=n), "w_err_norm")

    def against_squared(kind, epoch):
        """Huber σ over the squared loss on the same data sets, by σ (paired)."""
        rows = compare(
            _at(raw, noise_kind=kind, num_train=mid), factor="loss", baseline="squared", by=["sigma"], epoch=epoch
        )
        return {
            f"Huber σ={row['sigma']:g}": (Estimate(row["ratio"], row["ratio_lo"], row["ratio_hi"]), row["wins"])
            for _, row in rows.iterrows()
        }

    def ratio_text(found):
        return "; ".join(f"{label}: {ratio.factor()}" for label, (ratio, _) in found.items())

    huber = [f"Huber σ={s:g}" for s in sigmas]
    best_out = min(huber, key=lambda h: est("outliers", h, last).value)
    early = 3 if 3 in epochs else int(epochs[1])
    ols_out = _estimate(_at(t, noise_kind="outliers", epoch=last, num_train=mid), "ols_w_err_norm")
    same = check["max_abs_difference"] == 0
    start, trained, outliers = (
        against_squared("gaussian", early),
        against_squared("gaussian", last),
        against_squared("outliers", last),
    )
    won = outliers[best_out]
    # Trained, Huber steps as squared at lr·step ratio: read each clear difference against that lr.
    effective = {f"Huber σ={s:g}": lr * ratios[s] for s in sigmas}
    worse = [h for h, (r, _) in trained.items() if r.low > 1]
    better = [h for h, (r, _) in trained.items() if r.high < 1]
    follows = all(effective[h] > lr for h in worse) and all(effective[h] < lr for h in better) and (worse or better)
    why = (
        (
            " The clear differences follow the step: Huber is worse where it steps as squared at a larger lr ("
            + ", ".join(f"{h[6:]}: {effective[h]:.3g}" for h in worse)
            + ") and better where at a smaller one ("
            + ", ".join(f"{h[6:]}: {effective[h]:.3g}" for h in better)
            + "), whose noise floor is lower."
        )
        if follows and worse and better
        else ""
    )
    verdict = "Huber wins" if won[0].high < 1 else "no loss wins clearly"
    answer = (
        f"Huber's loss (3.5.1) is `nn.SmoothL1Loss(beta=σ)`; its derivative is clipped at ±1, so far from the "
        f"solution each example pulls with a bounded force. Compare the two at a given lr with care: `squared` here "
        f"is `nn.MSELoss`, without the book's ½, so its gradient is 2r, while Huber's is r/σ inside |r| ≤ σ "
        f"(measured by autograd on the model's losses: a step ratio of {ratios[sigmas[0]]:.4g} for σ={sigmas[0]:g}"
        + (f", {ratios[sigmas[-1]]:.4g} for σ={sigmas[-1]:g}" if len(sigmas) > 1 else "")
        + "). "
        f"Near the solution Huber at lr {lr:g} therefore steps as the squared loss at lr {lr:g}/(2σ) ({steps_text}); "
        f"with σ = 1, Huber takes half the step of squared: Huber at lr {check['lr']:g} against squared at lr "
        f"{check['squared_lr']:g}, on data whose residuals stay inside the zone, gave "
        + ("exactly the same ŵ and b̂" if same else f"ŵ and b̂ within {check['max_abs_difference']:.2g}")
        + f" ({check['runs']} runs, {check['epochs']} epochs). "
        f"Far from the solution the clipping is the cost: from the start at lr {lr:g}, after {early} epochs on "
        f"{mid} examples with Gaussian noise the median ‖ŵ − w‖ was {est('gaussian', 'squared', early)} with "
        f"the squared loss and {est('gaussian', huber[0], early)} with {huber[0]}; Huber's error over the squared "
        f"loss's on the same data sets: {ratio_text(start)}. That is why Huber looks worse after the seed's 3 epochs. "
        f"Once trained ({last} epochs) under Gaussian noise, squared reached {est('gaussian', 'squared', last)}, and "
        f"Huber over squared was {ratio_text(trained)}.{why} With {names['outliers']}, {verdict}: {best_out} reached "
        f"{est('outliers', best_out, last)} against {est('outliers', 'squared', last)} for the squared loss "
        f"({ratio_text(outliers)}; {best_out} had the smaller error on {won[1]:.0%} of the data sets), whose floor is "
        f"least squares ({ols_out}, over the data sets), itself dragged by the outliers. " + _precision_text(raw)
    )
    return Outcome({"ex2_huber": table}, {"ex2_huber_losses": fig_shapes, "ex2_huber": fig}, answer)


# --- 3. gradients --------------------------------------------------------------------------


def gradient_access(seed: int = 0, epochs: int = 3) -> pd.DataFrame:
    """The seed's example once more, reading the gradient where PyTorch keeps it."""
    model = LinearRegression(lr=0.03)
    data = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2, seed=seed)
    trainer = Trainer(max_epochs=epochs).fit(model, data)
    last_batch = data.num_train - (data.num_train - 1) // data.batch_size * data.batch_size
    # fit's last minibatch left its gradients in .grad
    assert model.net.weight.grad is not None and model.net.bias.grad is not None
    grad_w = model.net.weight.grad.reshape(-1)
    full = trainer.history[-1]
    return pd.DataFrame(
        {
            "quantity": ["model.net.weight.grad (last minibatch)", "full-batch gradient at the end"],
            "examples": [last_batch, data.num_train],
            "batch_size": [data.batch_size, data.batch_size],
            "grad_w_0": [float(grad_w[0]), float(full.grad_w[0])],
            "grad_w_1": [float(grad_w[1]), float(full.grad_w[1])],
            "grad_b": [float(model.net.bias.grad), full.grad_b],
        }
    )


def _medians_with_intervals(t: Table, keys: list[str], columns: dict[str, str]) -> pd.DataFrame:
    """Per cell, the median of each |column| over the runs that did not diverge, with its 95%
    interval: ``{name}_median``, ``_median_lo``, ``_median_hi`` (``columns`` maps each column to
    its name in the table, e.g. grad_b to grad_b_abs)."""
    table = None
    for column, name in columns.items():
        points, _ = t.point_stats(keys, column, ranks=lambda n: median_ranks(n, 0.95))
        part = points[keys].assign(
            **{
                f"{name}_median": points["median"],
                f"{name}_median_lo": points["ci_lo"],
                f"{name}_median_hi": points["ci_hi"],
            }
        )
        table = part if table is None else table.merge(part, on=keys, how="outer")
    return table


def ex3_gradients(df: Any) -> Outcome:
    t = open_table(df)
    table = _medians_with_intervals(
        t, ["lr", "epoch"], {"grad_w_norm": "grad_w_norm", "grad_b": "grad_b_abs", "w_err_norm": "w_err_norm"}
    )
    access = gradient_access()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    error_curve(t, x="epoch", y="grad_w_norm", hue="lr", ax=axes[0], logx=False, legend=False)
    error_curve(t, x="epoch", y="grad_b", hue="lr", ax=axes[1], logx=False, legend=False)
    merged_legend(axes, axes[1], title="lr")
    axes[0].set_title("full-batch gradient of the training loss, weights")
    axes[1].set_title("full-batch gradient of the training loss, bias")
    fig.suptitle(f"Exercise 3: the full-batch gradient against epoch (num_train={int(_one(t, 'num_train'))})")
    fig.tight_layout()

    epochs = [e for e in t.values("epoch") if e != 0]
    last, earlier = epochs[-1], epochs[max(0, (2 * len(epochs)) // 3 - 1)]
    lrs = t.values("lr")
    g = {lr: _estimate(_at(t, lr=lr, epoch=last), "grad_w_norm") for lr in lrs}
    change = {lr: _ratio(_at(t, lr=lr, epoch=last), _at(t, lr=lr, epoch=earlier), "grad_w_norm") for lr in lrs}
    g0 = _estimate(_at(t, epoch=0), "grad_w_norm", per_stream=True)  # the start: one per data set, whatever the lr
    falling = [lr for lr in lrs if change[lr].high < 1]
    flat = [lr for lr in lrs if not change[lr].clear()]
    rising = [lr for lr in lrs if change[lr].low > 1]

    def listed(chosen):
        return ", ".join(f"{lr:g}" for lr in chosen)

    # Where it has stopped, the level against the lr: each lr's gradient over the next smaller
    # one's, on the same data sets (the lr does not change the data).
    steps = [
        (a, b, _ratio(_at(t, lr=b, epoch=last), _at(t, lr=a, epoch=last), "grad_w_norm"))
        for a, b in zip(flat, flat[1:])
    ]
    grows = ""
    if steps:
        pairs = "; ".join(f"lr {b:g} over {a:g}: {r.factor()}" for a, b, r in steps)
        grows = (
            f", a noise that grows with the lr ({pairs})"
            if all(r.low > 1 for _, _, r in steps)
            else f"; its level does not clearly grow with every step of the lr ({pairs})"
        )
    reading = "; ".join(
        filter(
            None,
            [
                f"at lr {listed(falling)} it is still falling: SGD is still descending" if falling else "",
                f"at lr {listed(flat)} it changed by no clear factor: SGD has stopped at the noise of its minibatches{grows}"
                if flat
                else "",
                f"at lr {listed(rising)} it rose" if rising else "",
            ],
        )
    )
    n, bs, ragged = int(access["examples"][1]), int(access["batch_size"][0]), int(access["examples"][0])
    answer = (
        "PyTorch keeps a parameter's gradient on the parameter: `model.net.weight.grad` and "
        "`model.net.bias.grad` (the seed's `get_w_b` reads `.data`, its gradient is `.grad`). After `fit` "
        f"they hold the gradient of the *last minibatch* only, here of {ragged} examples "
        f"({n} = {(n - ragged) // bs}·{bs} + {ragged}): ‖grad‖ = "
        f"{np.hypot(access['grad_w_0'][0], access['grad_w_1'][0]):.2g}, while the full-batch gradient at the same "
        f"point is {np.hypot(access['grad_w_0'][1], access['grad_w_1'][1]):.2g} (one run, the seed's); the full-batch "
        "gradient needs a pass of its own (`torch.autograd.grad`, as the checkpoints here do, so `.grad` is left as SGD "
        f"left it). From {g0} at the start, after {last} epochs the median full-batch ‖∇_w L‖ was "
        + "; ".join(f"{g[lr]} at lr {lr:g}" for lr in lrs)
        + f". Each run's gradient at epoch {last} over its own at epoch {earlier}: "
        + "; ".join(f"lr {lr:g}: {change[lr].factor()}" for lr in lrs)
        + f". So {reading}. "
        + _precision_text(t)
    )
    return Outcome({"ex3_gradients": table, "ex3_grad_access": access}, {"ex3_gradients": fig}, answer)


# --- 4. learning rate x epochs -------------------------------------------------------------


def ex4_lr_epochs(df: Any) -> Outcome:
    t = open_table(df)
    table = summarize(t, by=["lr", "epoch"], ci=0.95)
    n = int(_one(t, "num_train"))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.4), gridspec_kw={"width_ratios": [1.0, 1.1]})
    lr_epoch_heatmap(t, ax=axes[0])
    axes[0].set_title("median ‖ŵ − w‖ (grey: most runs diverged)")
    error_curve(
        t.filter("epoch > 0"),
        x="epoch",
        y="w_err_norm",
        hue="lr",
        floor="ols_w_err_norm",
        ax=axes[1],
        legend_title="lr",
        legend="outside",
    )
    axes[1].set_title("error against epoch, with least squares on the same data")
    fig.suptitle(
        f"Exercise 4: more epochs help until a floor set by the data and, for SGD, by the learning rate (num_train={n})"
    )
    fig.tight_layout(w_pad=3.0)  # room between the colour bar's label and the right panel's y label

    last = int(t.values("epoch")[-1])
    final = table[table["epoch"] == last]
    stable = final[final["diverged"] == 0]
    best = stable.loc[stable["w_err_norm_median"].idxmin()]
    diverging = sorted(final[final["diverged"] > final["count"] / 2]["lr"])
    lrs = t.values("lr")
    floor = _estimate(_at(t, epoch=last), "ols_w_err_norm")
    small = lrs[0]
    e = [ep for ep in t.values("epoch") if ep != 0]
    mid = e[len(e) // 2]
    slow = [_estimate(_at(t, lr=small, epoch=ep), "w_err_norm") for ep in (e[0], mid, last)]
    fell = _ratio(_at(t, lr=small, epoch=last), _at(t, lr=small, epoch=mid), "w_err_norm")
    # SGD against least squares on the same data set, run by run, for the lrs that reached a floor
    floors = [lr for lr in sorted(stable["lr"]) if lr >= best["lr"]]
    over_ols = {lr: _paired_columns(_at(t, lr=lr, epoch=last), "w_err_norm", "ols_w_err_norm") for lr in floors}
    steps = [
        _compared(_at(t, epoch=last).select({"lr": [a, b]}), factor="lr", baseline=a)[b]
        for a, b in zip(floors, floors[1:])
    ]
    grows = bool(steps) and all(step.low > 1 for step in steps)
    big = floors[-1]
    noise_var = _noise_var(t)
    floor_big = ""
    if noise_var is not None and t.values("loss") == ["squared"]:
        rms = np.sqrt(
            theory.sgd_stationary_w_err_sq(
                big, int(_one(t, "batch_size")), feature_count(t), noise_var, str(_one(t, "reduction"))
            )
        )
        measured = final[final["lr"] == big].iloc[0]
        floor_big = (
            f"; its root mean square was {measured['w_err_norm_rmse']:.2g} ± "
            f"{_sig(measured['w_err_norm_rmse_mcse'], 1)} (± one MCSE), theory's noise floor of online SGD at that lr "
            f"{float(rms):.2g}, dashed on the figure" + _ragged_text(n, int(_one(t, "batch_size")))
        )
    if not diverging:
        diverged_text = "No lr in the grid diverged."
    elif diverging == [v for v in lrs if v >= diverging[0]]:
        diverged_text = f"From lr {diverging[0]:g} up, most runs diverged."
    else:
        diverged_text = f"Most runs diverged at lr {', '.join(f'{v:g}' for v in diverging)}."
    ratios = "; ".join(f"lr {lr:g}: {over_ols[lr].factor()}" for lr in floors)
    pairs = "; ".join(f"lr {b:g} over {a:g}: {step.factor()}" for (a, b), step in zip(zip(floors, floors[1:]), steps))
    trend = (
        f"grows with the lr (each lr's error over the next smaller one's, on the same data sets: {pairs})"
        if grows
        else f"does not clearly grow with every step of the lr (each lr's error over the next smaller one's, on "
        f"the same data sets: {pairs})"
    )
    answer = (
        f"Error falls with epochs at a rate set by the learning rate: at lr {small:g} the median ‖ŵ − w‖ went "
        f"{slow[0]} → {slow[1]} → {slow[2]} after {e[0]}, {mid} and {last} epochs (each run's error at epoch {last} "
        f"over its own at epoch {mid}: {fell.factor()}). It does not keep improving: it stops at a floor. The data set "
        f"one floor, least squares on the same examples ({floor}, median over the data sets). SGD with a constant lr "
        f"comes near it only when the lr is small enough: after {last} epochs, SGD's error over least squares' on the "
        f"same data set was, {ratios}. Above lr {best['lr']:g} it stalls at a level that {trend}, the noise of the "
        f"last minibatches (lr {big:g}: median {_estimate(_at(t, lr=big, epoch=last), 'w_err_norm')}{floor_big}). "
        + diverged_text
        + " "
        + _precision_text(t)
    )
    return Outcome({"ex4_lr_epochs": table}, {"ex4_lr_epochs": fig}, answer)


# --- 5. amount of data ---------------------------------------------------------------------


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


# --- 6. beyond exercise 4: reaching least squares ----------------------------------------------


def _methods(t: Table) -> list[tuple[str, float, str]]:
    """The ways to train a study 6 grid holds, as (label, lr_decay, average_from): each decay
    with the last iterate, and each averaging with a constant lr."""
    out = []
    for p in t.values("lr_decay"):
        out.append(("constant lr" if p == 0 else f"lr·(1 + t)^−{p:g}", float(p), "none"))
    for a in t.values("average_from"):
        if a != "none":
            out.append(
                (
                    "average from the first step"
                    if a == "0"
                    else f"average after epoch {a} (the last iterate until then)",
                    0.0,
                    a,
                )
            )
    return out


#: The cases in which study 6 checks that tail averaging reaches least squares (issue 20's):
#: (num_train, lr, epoch, average_from).
LIMIT_CASES = ((1000, 0.1, 20, "2"), (10000, 0.03, 2, "1"))
#: Within how many times least squares' error (the median paired ratio's upper bound) a method
#: "reaches" it.
REACHES = 1.2


def ex6_reaching_the_limit(df: Any) -> Outcome:
    t = open_table(df)
    _require(t, "ex6_reaching_the_limit", lr_decay=(0.0,), average_from=("none",))
    table = summarize(t, by=["num_train", "lr", "lr_decay", "average_from", "epoch"], ci=0.95)
    methods = _methods(t)
    labels = [m[0] for m in methods]
    cases = " ".join(
        f"WHEN lr_decay = {literal(p)} AND average_from = {literal(a)} THEN {literal(name)}" for name, p, a in methods
    )
    shown = t.derive(method=f"CASE {cases} END").filter("method IS NOT NULL AND epoch > 0")
    sizes = [int(n) for n in t.values("num_train")]
    lrs = [float(v) for v in t.values("lr")]
    last = int(t.values("epoch")[-1])
    fig, axes = plt.subplots(
        len(lrs), len(sizes), figsize=(6.0 * len(sizes) + 3.4, 4.4 * len(lrs)), sharey=True, squeeze=False
    )
    for row, lr in zip(axes, lrs):
        for ax, n in zip(row, sizes):
            error_curve(
                _at(shown, num_train=n, lr=lr),
                x="epoch",
                y="w_err_norm",
                hue="method",
                hue_order=labels,
                floor="ols_w_err_norm",
                ax=ax,
                legend=False,
            )
            ax.set_title(f"num_train={n:,}, lr={lr:g}")
    # matplotlib types subplots(squeeze=False)'s axes as a bare ndarray: numpy cannot say .flat yields Axes
    merged_legend(axes.flat, axes[0][-1], title="SGD")  # type: ignore[arg-type]
    fig.suptitle(
        "Study 6: a decaying lr, or the average of the iterates, against constant-lr SGD and least squares "
        "on the same data"
    )
    fig.tight_layout()

    @functools.cache  # each asked more than once below: one query each
    def over_ols(n: int, lr: float, epoch: int, p: float, a: str) -> Estimate:
        return _paired_columns(
            _at(t, num_train=n, lr=lr, epoch=epoch, lr_decay=p, average_from=a), "w_err_norm", "ols_w_err_norm"
        )

    noise_var, d = _noise_var(t), feature_count(t)
    limits, reached_all = [], True  # the cases of tail averaging, those the grid holds
    for n, lr, epoch, a in LIMIT_CASES:
        if n not in sizes or lr not in lrs or epoch not in t.values("epoch") or a not in t.values("average_from"):
            continue
        averaged, plain = over_ols(n, lr, epoch, 0.0, a), over_ols(n, lr, epoch, 0.0, "none")
        reached_all &= averaged.high <= REACHES
        verdict = "within" if averaged.high <= REACHES else "not within"
        text = (
            f"at n = {n:,}, lr {lr:g}, after {epoch} epochs, the average after epoch {a} is {averaged.factor()} "
            f"least squares' error on the same data set ({verdict} {REACHES:g} times it), the last iterate "
            f"{plain.factor()}"
        )
        if noise_var is not None:
            row = table[
                (table["num_train"] == n)
                & (table["lr"] == lr)
                & (table["epoch"] == epoch)
                & (table["lr_decay"] == 0)
                & (table["average_from"].astype(str) == a)
            ].iloc[0]
            text += (
                f"; its root mean square error {row['w_err_norm_rmse']:.2g} ± {_sig(row['w_err_norm_rmse_mcse'], 1)}"
                f" against Polyak and Juditsky's σ√(d/n) = "
                f"{float(np.sqrt(theory.averaged_sgd_w_err_sq(n, d, noise_var))):.2g}"
            )
        limits.append(text)
    parts = []
    listed = []
    for lr in lrs:
        for n in sizes:
            listed.append(
                f"n = {n:,}, lr {lr:g}: "
                + ", ".join(f"{name} {over_ols(n, lr, last, p, a).factor()}" for name, p, a in methods)
            )
    first = next((m for m in methods if m[2] == "0"), None)
    if first is not None:
        parts.append(
            "averaging from the first step keeps the start's transient in the average, and stays far above ("
            + ", ".join(
                f"{over_ols(n, lr, last, 0.0, '0').factor()} at n = {n:,}, lr {lr:g}" for lr in lrs for n in sizes
            )
            + ")"
        )
    steps = {n: int(_one(_at(t, num_train=n, epoch=last), "steps")) for n in sizes}
    for name, p, _ in (m for m in methods if m[1] > 0):
        budget = ", ".join(
            f"{lr * float(np.sum((1.0 + np.arange(steps[n])) ** -p)):.2g} over the {steps[n]:,} steps "
            f"at n = {n:,}, lr {lr:g}"
            for lr in lrs
            for n in sizes
        )
        reached = [
            f"n = {n:,}, lr {lr:g}" for lr in lrs for n in sizes if over_ols(n, lr, last, p, "none").high <= REACHES
        ]
        parts.append(
            f"with {name}, the steps' sum Σ lr_t is {budget}; "
            + (
                f"it reaches least squares (within {REACHES:g} times) at {'; '.join(reached)}"
                if reached
                else "it does not reach least squares within these epochs"
            )
        )
    tail = ("Tail averaging reaches it: " if reached_all else "Tail averaging: ") + "; ".join(limits) + ". "
    answer = (
        "Exercise 4 showed constant-lr SGD stopping at a noise floor above least squares. "
        + (tail if limits else "")
        + "".join(f"{p[0].upper()}{p[1:]}. " for p in parts)
        + f"After {last} epochs, SGD's error over least squares' on the same data set was: "
        + "; ".join(listed)
        + ". "
        + _precision_text(t)
    )
    return Outcome({"ex6_reaching_the_limit": table}, {"ex6_reaching_the_limit": fig}, answer)


# --- 7. weight decay (d2l §3.7) ------------------------------------------------------------------


def _true_w_norm(t: Table, d: int) -> float:
    """‖w‖ of the grid's runs of d features, from the table's spec (w, or its one number
    repeated d times); NaN where the table has no spec."""
    return float(np.linalg.norm(w_vector((t.spec or {}).get("w", [np.nan]), d)))


def ex7_weight_decay(df: Any) -> Outcome:
    t = open_table(df)
    _require(t, "ex7_weight_decay", weight_decay=(0.0,))
    table = summarize(t, by=["num_train", "weight_decay", "epoch"], ci=0.95)
    sizes = [int(n) for n in t.values("num_train")]
    decays = [float(v) for v in t.values("weight_decay")]
    last = int(t.values("epoch")[-1])
    d = int(_one(t, "num_inputs"))
    at_last = t.filter(f"epoch = {last}")
    # λ = 0 sits at the left edge of a log axis: drawn at a tenth of the smallest λ > 0, and said.
    positive = [v for v in decays if v > 0]
    zero_at = min(positive) / 10 if positive else 1.0
    shifted = at_last.derive(lam=f"CASE WHEN weight_decay = 0 THEN {literal(zero_at)} ELSE weight_decay END")
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.2))
    small = sizes[0]
    losses = shifted.select({"num_train": [small]})
    long = losses.query(
        f"SELECT lam, 'training loss' AS kind, train_loss AS v FROM {losses.relation} UNION ALL "
        f"SELECT lam, 'validation MSE' AS kind, val_mse AS v FROM {losses.relation}"
    )
    ax = axes[0]
    for kind, colour in zip(("training loss", "validation MSE"), sns.color_palette(PALETTE, 2)):
        rows = long[long["kind"] == kind]
        xs, meds, los, his = [], [], [], []
        for lam, group in rows.groupby("lam", sort=True):
            e = _interval(group["v"].to_numpy())
            xs.append(lam)
            meds.append(e.value)
            los.append(e.low)
            his.append(e.high)
        ax.plot(xs, meds, marker="o", color=colour, label=kind)
        ax.fill_between(xs, los, his, color=colour, alpha=0.25, linewidth=0)
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel(f"weight decay λ (λ = 0 drawn at {zero_at:g})")
    ax.set_ylabel("mean squared error (median over data sets)")
    ax.set_title(f"d2l §3.7's setting: num_train={small}, d={d}, epoch {last}")
    ax.legend(fontsize="small", title="band: the median's 95% interval", title_fontsize="small")
    error_curve(shifted, x="lam", y="w_err_norm", hue="num_train", ax=axes[1], legend=False)
    # Least squares on each data size (the minimum-norm fit where n < d + 1): one grey line each.
    for n in sizes:
        ols = _estimate(_at(at_last, num_train=n), "ols_w_err_norm")
        axes[1].axhline(
            ols.value,
            color="0.5",
            linewidth=1.1,
            zorder=1,
            label="least squares on the same data (minimum norm where n ≤ d)" if n == sizes[0] else None,
        )
        axes[1].annotate(
            f"n = {n:,}",
            (1.0, ols.value),
            xycoords=("axes fraction", "data"),
            xytext=(-3, 2),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.35",
        )
    merged_legend([axes[1]], axes[1], title="num_train")
    # Ridge's closed form (theory.weight_decay_w_err_sq) holds for n >> d; say why it is not drawn.
    ratio = d / max(sizes)
    axes[1].text(
        1.02,
        0.02,
        textwrap.fill(
            f"No theory of weight decay is drawn: ridge's closed form holds for n ≫ d only (here d/n ≥ {ratio:.2g}), "
            "for the average of the iterates, not the last one.",
            48,
        ),
        transform=axes[1].transAxes,
        fontsize=7,
        color="0.3",
        va="bottom",
    )
    axes[1].set_xlabel(f"weight decay λ (λ = 0 drawn at {zero_at:g})")
    axes[1].set_title(f"‖ŵ − w‖₂ against λ, d={d}, epoch {last}")
    fig.suptitle(
        f"Study 7: weight decay λ on the weight, as d2l §3.7 (d = {d} features, ‖w‖ = "
        f"{_sig(_true_w_norm(t, d))}), at num_train = " + ", ".join(f"{n:,}" for n in sizes)
    )
    fig.tight_layout()

    @functools.cache  # the same cells are read for the table of best λ and for the text
    def est(n: int, lam: float, column: str) -> Estimate:
        return _estimate(_at(t, num_train=n, weight_decay=lam, epoch=last), column)

    best = {}
    for n in sizes:
        medians = {lam: est(n, lam, "w_err_norm") for lam in decays}
        best[n] = min(medians, key=lambda lam: medians[lam].value)
    parts = []
    lam_book = 3.0 if 3.0 in decays else positive[len(positive) // 2]
    train0, val0 = est(small, 0.0, "train_loss"), est(small, 0.0, "val_mse")
    train3, val3 = est(small, lam_book, "train_loss"), est(small, lam_book, "val_mse")
    parts.append(
        f"in the book's setting (n = {small}, d = {d}, {last} epochs), without weight decay the training loss is "
        f"{train0} and the validation MSE {val0}: the model fits the {small} examples and not the rest; with "
        f"λ = {lam_book:g} (the book's) they are {train3} and {val3}"
    )
    for n in sizes:
        base, chosen = est(n, 0.0, "w_err_norm"), est(n, best[n], "w_err_norm")
        paired = _ratio(
            _at(t, num_train=n, weight_decay=best[n], epoch=last),
            _at(t, num_train=n, weight_decay=0.0, epoch=last),
            "w_err_norm",
        )
        if best[n] == 0.0:
            parts.append(
                f"at n = {n:,} weight decay stops helping: ‖ŵ − w‖ is smallest without it ({base}), and "
                f"every λ > 0 adds bias (at λ = {decays[-1]:g}: {est(n, decays[-1], 'w_err_norm')})"
            )
        else:
            parts.append(
                f"at n = {n:,} the best λ of the grid, {best[n]:g}, gives ‖ŵ − w‖ = {chosen} against {base} "
                f"without (paired ratio {paired.factor()})"
            )
    parts.append(
        f"no theory is drawn: ridge's closed form (study.theory.weight_decay_w_err_sq) holds for n ≫ d only, "
        f"and d/n is {d / max(sizes):.2g} at the largest n here"
    )
    strongest = ", ".join(f"{est(n, decays[-1], 'w_err_norm')} at n = {n:,}" for n in sizes)
    parts.append(f"at λ = {decays[-1]:g}, ŵ is shrunk to about 0 at every n: ‖ŵ − w‖ is {strongest}, about ‖w‖ itself")
    answer = (
        f"Weight decay shrinks ŵ toward 0 (‖w‖ = {_sig(_true_w_norm(t, d))} here): "
        + "; ".join(parts)
        + ". "
        + _precision_text(t)
    )
    return Outcome({"ex7_weight_decay": table}, {"ex7_weight_decay": fig}, answer)


# --- running them --------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    number: int
    name: str
    analyse: Callable[[Any], Outcome]  # a results table: a DataFrame, a path or a study.analysis.Table
    quick: dict  # overrides of the grid for --quick


_ANALYSES = {
    1: ex1_reduction,
    2: ex2_huber,
    3: ex3_gradients,
    4: ex4_lr_epochs,
    5: ex5_data_size,
    6: ex6_reaching_the_limit,
    7: ex7_weight_decay,
}
STUDIES = {n: Study(n, name, _ANALYSES[n], quick) for n, (name, quick) in SPECS.items()}


def run_study(
    number: int,
    grid: Grid,
    *,
    out_dir: Path,
    n_jobs: int = -1,
    progress: bool = True,
    formats: Sequence[str] = (".png",),
) -> tuple[Outcome, int, float, list[Path]]:
    """One study: its grid run (the raw table in results/raw/, its runs kept in the store beside
    it), its tables and figures written under ``out_dir``. Returns its outcome, its runs, its
    seconds and the files written."""
    study, started = STUDIES[number], time.perf_counter()
    raw = out_dir / "results" / "raw" / f"{study.name}.parquet"
    run_grid(grid, out=raw, n_jobs=n_jobs, progress=progress, frame=False)
    outcome = study.analyse(raw)  # from the file, as a table of any size is: never loaded whole
    written = []
    for name, table in outcome.tables.items():
        write_csv(table, out_dir / "results" / f"{name}.csv", significant=SUMMARY_DIGITS)
        written.append(out_dir / "results" / f"{name}.csv")
    for name, fig in outcome.figures.items():
        written += save_figure(fig, out_dir / "figures" / f"{name}.png", formats=formats)
    return outcome, grid.n_runs, time.perf_counter() - started, written


def run_exercises(
    numbers=None,
    *,
    quick: bool = False,
    out_dir: str | Path = ".",
    n_jobs: int = -1,
    progress: bool = True,
    log: Callable[[str], None] = print,
    formats: Sequence[str] = (".png",),
) -> dict[int, Outcome]:
    """Run the studies (all seven by default) and write their tables, figures and answers under
    ``out_dir``: results/ (summary CSVs, answers.md), results/raw/ (the raw tables) and
    figures/ (in each of ``formats``: ".png", ".svg", ".pdf"). ``out_dir`` must exist; the
    folders under it are created as needed, each named through ``log``. With ``n_jobs`` -1 or
    above 1, the studies run side by side, one process each (see study.exercise_runner).

    Returns
    -------
    dict
        Exercise number -> :class:`Outcome` (its figures closed once written).
    """
    return run_studies(
        numbers, quick=quick, out_dir=out_dir, n_jobs=n_jobs, progress=progress, log=log, formats=formats, keep=True
    )


# --- figures of any results table (study plot) ---------------------------------------------

#: Figures `study plot` draws from any results table: the error against one axis (its x), a
#: heatmap, or the nested-loop plot of every cell (neither has one x).
GENERIC_FIGURES = {
    "error-vs-num_train": "num_train",
    "error-vs-epoch": "epoch",
    "error-vs-lr": "lr",
    "heatmap": None,
    "nested-loop": None,
}
#: The axes a named figure puts on its lines, then on its columns and rows, where the user did
#: not: the first that vary, in this order.
_AUTO_AXES = (
    "lr",
    "loss",
    "num_train",
    "reduction",
    "sigma",
    "noise_kind",
    "noise",
    "batch_size",
    "lr_decay",
    "momentum",
    "weight_decay",
    "average_from",
    "drop_last",
    "epoch",
)
EXERCISE_FIGURES = (
    "ex1_reduction",
    "ex2_huber_losses",
    "ex2_huber",
    "ex3_gradients",
    "ex4_lr_epochs",
    "ex5_data_size",
    "ex6_reaching_the_limit",
)


def figure_names() -> list[str]:
    """What ``study plot --figure`` accepts: the generic figures and every exercise's figures."""
    return [*GENERIC_FIGURES, *EXERCISE_FIGURES]


def _title(y: str, x: str | None, epoch_text: str | None, fixed: dict | None, auto: list[str]) -> str:
    parts = [f"{LABELS.get(y, y)}" + (f" against {x}" if x else "")]
    if epoch_text:
        parts.append(epoch_text)
    if fixed:
        parts.append(", ".join(f"{k} = {values_text(v if isinstance(v, list) else [v])}" for k, v in fixed.items()))
    if auto:
        parts.append(f"panels by {' and '.join(auto)} (chosen by the figure: the table varies in them)")
    return "; ".join(parts)


def draw_xy(
    df: pd.DataFrame,
    *,
    x: str,
    y: str = "w_err_norm",
    hue: str | None = None,
    style: str | None = None,
    col: str | None = None,
    row: str | None = None,
    epoch: int | None = None,
    fixed: dict | None = None,
    auto: Sequence[str] = (),
    band: str = "ci",
    title: str | None = None,
) -> plt.Figure:
    """|y| against x, faceted (:func:`study.plots.error_facets`), at one checkpoint unless epoch
    is on the figure: ``epoch`` or, by default, the last, named in the title. ``fixed``: the
    values the rows were selected on (``--where``), for the title; ``band``: as error_curve's;
    ``title``: in place of the one made of those (the line of what is held fixed stays)."""
    where = "parameter of draw_xy"
    placed = [x, hue, style, col, row]
    epoch_text: str | None
    rows, epoch_text = at_epoch(df, epoch, placed=placed, where=where)
    if "epoch" in placed and epoch is None:
        epoch_text = None
    g = error_facets(
        rows,
        x=x,
        y=y,
        hue=hue,
        style=style,
        col=col,
        row=row,
        band=band,
        title=title if title is not None else _title(y, x, epoch_text, fixed, list(auto)),
    )
    return g.figure


def draw_figure(
    df: pd.DataFrame,
    name: str,
    *,
    y: str = "w_err_norm",
    hue: str | None = None,
    style: str | None = None,
    col: str | None = None,
    row: str | None = None,
    epoch: int | None = None,
    fixed: dict | None = None,
    band: str | None = None,
    title: str | None = None,
    order: str | Sequence[str] | None = None,
) -> plt.Figure:
    """One named figure from a results table: a generic one, or an exercise's (from its raw
    table, as the exercise draws it: hue, style, col, row, epoch and band are refused there).

    A generic figure sets x (``error-vs-num_train`` ...) and puts the axes that vary, and that
    the caller did not place, on hue, then col, then row, saying so in the title; more than
    that is refused (PoolingError) rather than pooled. ``nested-loop`` draws every cell on one
    axis (:func:`study.plots.nested_loop`), its factors in ``order`` (outermost first; default:
    every axis that varies); it alone takes ``order``, and it takes no hue, style, col or row.
    """
    where = "parameter of draw_figure"
    if name not in figure_names():
        raise ParameterError("figure", where, f"one of {figure_names()}", name)
    t = open_table(df)
    if y not in t.columns:
        raise ParameterError("y", where, "a column of the table", y)
    roles = {"hue": hue, "style": style, "col": col, "row": row}
    if order is not None and name != "nested-loop":
        raise ParameterError("order", where, f"left out with the figure {name} (only nested-loop takes it)", order)
    if name == "nested-loop":
        from .plots import nested_loop

        for role, value in roles.items():
            if value is not None:
                raise ParameterError(
                    role,
                    where,
                    "left out with the nested-loop figure (every axis that varies is "
                    "one of its factors, outermost first)",
                    value,
                )
        return nested_loop(t, y=y, order=order, epoch=epoch, band=band or "ci", title=title)
    if name not in GENERIC_FIGURES:
        for role, given in {**roles, "epoch": epoch, "band": band, "title": title}.items():
            if given is not None:
                raise ParameterError(
                    role, where, f"left out with the exercise figure {name} (drawn as the exercise draws it)", given
                )
        study = next(s for s in STUDIES.values() if name.startswith(s.name.split("_")[0] + "_"))
        figures = study.analyse(t).figures
        for other, fig in figures.items():
            if other != name:
                plt.close(fig)
        return figures[name]
    x = GENERIC_FIGURES[name]
    placed = ["lr", "epoch"] if x is None else [x]
    placed += [v for v in roles.values() if v]
    rows, epoch_text = at_epoch(t, epoch, placed=placed, where=where)
    free = [a for a in _AUTO_AXES if a in rows.varying(placed, axes_of(y))]
    auto: list[str] = []
    for role in ("hue", "col", "row") if x is not None else ("col", "row"):
        if roles[role] is None and free:
            axis = free.pop(0)
            roles[role] = axis
            if role != "hue":
                auto.append(axis)
    if free:
        raise PoolingError({a: rows.values(a) for a in free}, f"the figure {name}")
    if x is None:
        if hue or style:
            raise ParameterError(
                "hue" if hue else "style",
                where,
                "left out with the heatmap (its cells are lr × epoch; use col and row)",
                hue or style,
            )
        return heatmap_facets(
            rows,
            value=y,
            col=roles["col"],
            row=roles["row"],
            title=title if title is not None else _title(y, None, "every checkpoint but epoch 0", fixed, auto),
        )
    return draw_xy(t, x=x, y=y, **roles, epoch=epoch, fixed=fixed, auto=auto, band=band or "ci", title=title)
