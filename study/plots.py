"""Figures: seaborn on the tidy results table.

Conventions (seaborn's): functions take a long-form DataFrame and column names, keyword-only;
axes-level functions accept ``ax=`` (default: the current Axes) and return it.

Errors are drawn as magnitudes on log axes: a median line over replicates with a 10-90% band.
seaborn would silently drop non-positive and infinite values on a log axis; here runs that
diverged, and values that are exactly zero, are left out *and counted on the figure*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed or assumed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from .results import fit_power_law  # noqa: E402

__all__ = [
    "PALETTE", "LABELS", "error_curve", "lr_epoch_heatmap", "loss_shapes", "save_figure", "left_out_note", "magnitude",
]

PALETTE = "colorblind"
#: Axis labels that say what is measured.
LABELS = {
    "w_err_norm": "‖ŵ − w‖₂",
    "b_err": "|b̂ − b|",
    "w_err_0": "|ŵ₀ − w₀|",
    "w_err_1": "|ŵ₁ − w₁|",
    "ols_w_err_norm": "least squares ‖ŵ_ols − w‖₂",
    "gap_w_norm": "‖ŵ − ŵ_ols‖₂ (optimisation gap)",
    "grad_w_norm": "‖∇_w L‖ (full batch)",
    "grad_b": "|∂L/∂b| (full batch)",
    "num_train": "training examples (num_train)",
    "lr": "learning rate",
    "epoch": "epoch",
    "val_mse": "validation MSE",
}


def magnitude(data: pd.DataFrame, column: str) -> pd.Series:
    """|column|: errors are signed in the table, magnitudes on a log axis."""
    return data[column].abs()


def left_out_note(data: pd.DataFrame, column: str) -> tuple[pd.DataFrame, str]:
    """The rows a log axis can show, and a note counting the runs left out, and why."""
    value = magnitude(data, column)
    diverged = data["diverged"].astype(bool) if "diverged" in data else pd.Series(False, index=data.index)
    zero = ~diverged & (value == 0)
    other = ~diverged & ~zero & ~np.isfinite(value)
    keep = ~(diverged | zero | other)
    parts = [f"{int(n)} {why}" for n, why in ((diverged.sum(), "diverged"), (zero.sum(), "exactly 0"),
                                               (other.sum(), "not finite")) if n]
    note = f"left out: {', '.join(parts)} (of {len(data)})" if parts else ""
    return data[keep].assign(**{f"|{column}|": value[keep]}), note


def error_curve(
    data: pd.DataFrame,
    *,
    x: str,
    y: str,
    hue: str | None = None,
    hue_order: Sequence | None = None,
    floor: str | None = None,
    fit_from: float | None = None,
    ax: plt.Axes | None = None,
    logx: bool = True,
    ylabel: str | None = None,
    legend_title: str | None = None,
    legend: str | bool = "best",
    palette: str | Sequence = PALETTE,
) -> plt.Axes:
    """Median |y| against x over replicates, with a 10-90% band, on log axes.

    Parameters
    ----------
    data : DataFrame
        Tidy results: one row per run (and checkpoint; filter to one epoch first if x is not
        ``epoch``).
    x, y : str
        Columns; y is drawn as a magnitude.
    hue : str, optional
        A column whose values get one line each, in ``hue_order`` (default: sorted).
    floor : str, optional
        A column drawn as a dashed grey median line, e.g. ``ols_w_err_norm`` (least squares on
        the same data: the floor any method can reach).
    fit_from : float, optional
        Fit a power law to each line (and the floor) over x >= fit_from and show its slope
        with a 95% bootstrap interval in the legend.
    ax : Axes, optional
    logx : bool, default=True
    legend : str or False, default="best"
        A matplotlib legend location, or "outside": to the right of the Axes, clear of the lines.

    Returns
    -------
    Axes
    """
    ax = ax if ax is not None else plt.gca()
    shown, note = left_out_note(data, y)
    column = f"|{y}|"
    if hue:  # one colour per value, its legend entry carrying the fitted slope when asked
        levels = [v for v in (hue_order or sorted(data[hue].unique())) if v in set(shown[hue])]
        names = {v: _fmt(v) + _slope_text(shown[shown[hue] == v], x, column, fit_from) for v in levels}
        shown = shown.assign(**{hue: shown[hue].map(names)})
        palette = dict(zip(names.values(), sns.color_palette(palette, len(levels))))
    elif fit_from is not None:
        shown = shown.assign(_fit=f"SGD{_slope_text(shown, x, column, fit_from)}")
        hue, palette = "_fit", sns.color_palette(palette, 1)
    sns.lineplot(data=shown, x=x, y=column, hue=hue, estimator="median", errorbar=("pi", 80), marker="o",
                 markersize=4, palette=palette if hue else None, ax=ax)
    if floor is not None:
        f_shown, _ = left_out_note(data.drop(columns="diverged", errors="ignore"), floor)
        # the floor's slope over every x: least squares has no optimisation gap to wait out
        fit_all = None if fit_from is None else f_shown[x].min()
        label = "least squares on the same data" + _slope_text(f_shown, x, f"|{floor}|", fit_all)
        sns.lineplot(data=f_shown, x=x, y=f"|{floor}|", estimator="median", errorbar=("pi", 80), color="0.35",
                     linestyle="--", label=label, ax=ax)
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(ylabel or LABELS.get(y, y))
    if ax.get_legend() is not None:
        title = legend_title or (hue if hue and hue != "_fit" else None)
        where = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if legend == "outside" else {"loc": legend or "best"}
        ax.legend(title=title, fontsize="small", title_fontsize="small", **where)
        if legend is False:
            ax.get_legend().remove()
    if note:
        ax.text(0.99, 0.01, note, transform=ax.transAxes, ha="right", va="bottom", fontsize="x-small", color="0.3")
    return ax


def _slope_text(data: pd.DataFrame, x: str, column: str, fit_from: float | None) -> str:
    if fit_from is None:
        return ""
    part = data[data[x] >= fit_from]
    if part[x].nunique() < 2:
        return ""
    fit = fit_power_law(part[x], part[column])
    return f" (slope {fit.slope:.2f} [{fit.low:.2f}, {fit.high:.2f}])"


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def lr_epoch_heatmap(data: pd.DataFrame, *, value: str = "w_err_norm", ax: plt.Axes | None = None) -> plt.Axes:
    """Median |value| over replicates for each (lr, epoch), on a log colour scale.

    A cell where more than half the runs diverged is marked "div." and left uncoloured;
    cells where some diverged say how many.
    """
    ax = ax if ax is not None else plt.gca()
    df = data[data["epoch"] > 0].assign(_v=magnitude(data, value), _d=data["diverged"].astype(bool))
    finite = df[~df["_d"]]
    median = finite.pivot_table(index="lr", columns="epoch", values="_v", aggfunc="median")
    share = df.pivot_table(index="lr", columns="epoch", values="_d", aggfunc="mean")
    count = df.pivot_table(index="lr", columns="epoch", values="_d", aggfunc="sum")
    median = median.reindex(index=share.index, columns=share.columns).where(share <= 0.5)
    annot = median.map(lambda v: "" if np.isnan(v) else f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e"))
    for (lr, epoch), n in count.stack().items():
        if n and share.loc[lr, epoch] <= 0.5:
            annot.loc[lr, epoch] += f"\n({int(n)} div.)"
    positive = median[median > 0]
    norm = LogNorm(vmin=np.nanmin(positive.values), vmax=np.nanmax(positive.values))
    sns.heatmap(median, annot=annot, fmt="", norm=norm, cmap="viridis", ax=ax, annot_kws={"fontsize": 7},
                cbar_kws={"label": f"median {LABELS.get(value, value)}"}, linewidths=0.5, linecolor="white")
    # seaborn leaves masked (NaN) cells unannotated: mark the diverged ones by hand
    for i, lr in enumerate(median.index):
        for j, epoch in enumerate(median.columns):
            if share.loc[lr, epoch] > 0.5:
                ax.text(j + 0.5, i + 0.5, "div.", ha="center", va="center", fontsize=7, color="0.25")
    ax.set_facecolor("0.85")  # diverged cells show as grey
    ax.set_xlabel(LABELS["epoch"])
    ax.set_ylabel(LABELS["lr"])
    ax.set_yticklabels([f"{v:g}" for v in median.index], rotation=0)
    return ax


def loss_shapes(sigmas: Sequence[float], *, axes: Sequence[plt.Axes] | None = None, span: float = 4.0) -> Sequence[plt.Axes]:
    """The squared loss and Huber's (3.5.1) for each σ (left), and their derivatives (right)."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    r = np.linspace(-span, span, 801)
    colors = sns.color_palette(PALETTE, len(sigmas) + 1)
    axes[0].plot(r, r**2, color=colors[0], label="squared: r²")
    axes[1].plot(r, 2 * r, color=colors[0], label="squared: 2r")
    for sigma, color in zip(sigmas, colors[1:]):
        a = np.abs(r)
        axes[0].plot(r, np.where(a > sigma, a - sigma / 2, r**2 / (2 * sigma)), color=color, label=f"Huber σ={sigma:g}")
        axes[1].plot(r, np.clip(r / sigma, -1, 1), color=color, label=f"Huber σ={sigma:g}")
    axes[0].set(xlabel="residual r = ŷ − y", ylabel="loss l(r)", ylim=(0, span**2 / 2))
    axes[1].set(xlabel="residual r = ŷ − y", ylabel="derivative l′(r)", ylim=(-3, 3))
    for ax in axes:
        ax.axhline(0, color="0.8", linewidth=0.8)
        ax.legend(fontsize="small")
    return axes


def save_figure(fig: plt.Figure, path: str | Path) -> list[Path]:
    """Write PNG and SVG (no timestamps, so a figure that did not change writes the same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.rcParams["svg.hashsalt"] = "estimation-study"  # SVG element ids from a fixed salt, not a random one
    written = []
    for suffix, metadata in ((".png", {"Software": None}), (".svg", {"Date": None, "Creator": None})):
        target = path.with_suffix(suffix)
        fig.savefig(target, dpi=110, bbox_inches="tight", metadata=metadata)
        written.append(target)
    plt.close(fig)
    return written
