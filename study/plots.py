"""Figures: seaborn on the tidy results table.

Conventions (seaborn's): functions take a long-form DataFrame and column names, keyword-only;
axes-level functions accept ``ax=`` (default: the current Axes) and return it; the
figure-level :func:`error_facets` returns its ``FacetGrid``.

What a figure shows, it says:

- Errors are magnitudes on log axes: a median line over the runs of each point, with a band:
  by default the 95% interval of that median (its precision, from order statistics of the
  runs), or the 10-90% spread of the runs, or both; the legend and each panel say which, and
  how many runs a point holds.
- seaborn would silently drop non-positive and infinite values on a log axis; here runs that
  diverged, values that are exactly zero, and points at x <= 0 on a log x axis are left out
  *and counted on the panel*.
- Nothing is pooled silently: where an axis of the data varies but is neither on the figure
  (x, hue, style, col, row) nor fixed by the caller, :func:`error_curve`,
  :func:`error_facets` and :func:`lr_epoch_heatmap` refuse with a :class:`PoolingError` that
  names the axes and their values. Replicates are what a band is over, never an axis.
- Least squares depends on the data alone: it is drawn once per data stream (the ``seed``
  column), however many learning rates or losses were trained on that data.
- Dashes mean theory (study.theory), drawn only where it holds: black for least squares
  (Gaussian noise), in a line's colour for the noise floor of SGD on the squared loss
  (Gaussian noise; never for Huber). Measured least squares is grey, solid, square markers.
  ``style`` is drawn with markers, never with dashes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed or assumed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.transforms import Affine2D  # noqa: E402

from . import theory  # noqa: E402
from .analysis import Table, literal, open_table, quote  # noqa: E402
from .results import (  # noqa: E402
    DATA_AXES, LEAST_SQUARES, MIN_FIT_LEVELS, ParameterError, PoolingError, axes_of, fit_power_law, format_value,
    median_ranks,
)
from .vocabulary import AXES, FIGURE_FORMATS  # noqa: E402  (FIGURE_FORMATS: what save_figure writes)

__all__ = [
    "PALETTE", "LABELS", "FLOORS", "FIGURE_FORMATS", "ROLES", "error_curve", "error_facets", "lr_epoch_heatmap",
    "heatmap_facets", "loss_shapes", "save_figure", "merged_legend", "left_out_note", "check_roles",
    "refuse_pooling", "feature_count", "held_fixed", "BANDS",
]

PALETTE = "colorblind"
#: Axis labels that say what is measured.
LABELS = {
    "w_err_norm": "‖ŵ − w‖₂",
    "b_err": "|b̂ − b|",
    "w_err_0": "|ŵ₀ − w₀|",
    "w_err_1": "|ŵ₁ − w₁|",
    "ols_w_err_norm": "least squares ‖ŵ_ols − w‖₂",
    "ols_b_err": "least squares |b̂_ols − b|",
    "gap_w_norm": "‖ŵ − ŵ_ols‖₂ (optimisation gap)",
    "grad_w_norm": "‖∇_w L‖ (full batch)",
    "grad_b": "|∂L/∂b| (full batch)",
    "num_train": "training examples (num_train)",
    "lr": "learning rate",
    "epoch": "epoch",
    "val_mse": "validation MSE",
    "train_loss": "training loss",
}
#: The least-squares twin of an SGD error: the floor any method can reach on the same data.
FLOORS = {"w_err_norm": "ols_w_err_norm", "b_err": "ols_b_err"}
#: The columns a figure puts its lines and panels on (x and y aside).
ROLES = ("hue", "style", "col", "row")
#: Panels in a row of a faceted figure with no ``row``, before it wraps to the next.
COL_WRAP = 4
#: Markers for ``style``: dashes are kept for theory.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Columns that are never a role: replicates are the unit a band is over.
_NOT_ROLES = ("replicate", "seed", "diverged")


def feature_count(data: Any) -> int:
    """d, the number of features: the table has one ``w_err_j`` column per feature."""
    return sum(1 for c in open_table(data).columns if re.fullmatch(r"w_err_\d+", str(c)))


def _left_out_text(counts: dict[str, int], x: str | None) -> str:
    """'left out: 2 diverged, 1 at epoch 0 (log axis) (of 40)', from Table.point_stats' counts."""
    at = f"at {x} ≤ 0" if x is None or counts["off_nonzero"] else f"at {x} 0"
    parts = [f"{n} {why}" for n, why in ((counts["diverged"], "diverged"), (counts["off_axis"], f"{at} (log axis)"),
                                         (counts["zero"], "exactly 0"), (counts["other"], "not finite")) if n]
    return f"left out: {', '.join(parts)} (of {counts['rows']})" if parts else ""


def left_out_note(data: Any, column: str, *, x: str | None = None, diverged: bool = True) -> str:
    """A note counting the rows a log axis cannot show, and why: diverged runs, rows at
    ``x`` <= 0 on a log x axis (epoch 0, the start), values exactly 0, values not finite.
    ``diverged=False`` keeps diverged runs (for least squares, which never diverges)."""
    t = open_table(data)
    _, counts = t.point_stats([x] if x else [], column, off_axis=x, diverged=diverged)
    return _left_out_text(counts, x)


def check_roles(data: Any, *, where: str, x: str | None = None, y: str | None = None,
                **roles: str | None) -> None:
    """Refuse (ParameterError) an x, y, hue, style, col or row that is not a column the figure
    can use: x and the roles are columns (not replicate or seed), y a numeric column."""
    t = open_table(data)
    axes = [c for c in t.columns if c not in _NOT_ROLES]
    grid_axes = ", ".join(a for a in axes if a in AXES)
    for name, value in {"x": x, **roles}.items():
        if value is not None and (not isinstance(value, str) or value not in axes):
            raise ParameterError(name, where, f"one column of the table (its axes: {grid_axes})", value)
    if y is not None:
        numeric = [c for c in t.columns if c not in AXES and c not in _NOT_ROLES and t.numeric(c)]
        if not isinstance(y, str) or y not in numeric:
            shown = [c for c in numeric if not re.fullmatch(r"w_(hat|err)_\d+", c) or c.endswith("_0")]
            raise ParameterError("y", where, f"a measured column of the table ({', '.join(shown)}, ...)", y)
    if x is not None and x in roles.values():
        role = next(k for k, v in roles.items() if v == x)
        raise ParameterError(role, where, f"another column than x ({x} is on the x axis)", x)


def refuse_pooling(data: Any, placed: Sequence[str | None], column: str, where: str) -> None:
    """Raise PoolingError where an axis that ``column`` depends on varies among rows that agree
    on every column of ``placed``."""
    pooled = open_table(data).varying(placed, axes_of(column))
    if pooled:
        raise PoolingError(pooled, where)


def _log_scale(t: Table, x: str) -> bool:
    """Log x for numbers spanning a decade or more (num_train, lr, epochs 1-100), linear otherwise."""
    if not t.numeric(x):
        return False
    positive = [v for v in t.values(x) if v > 0]
    return len(positive) > 0 and max(positive) >= 10 * min(positive)


def _levels(t: Table, column: str | None, order: Sequence | None = None) -> list:
    if column is None:
        return []
    present = t.values(column)
    return [v for v in order if v in set(present)] if order is not None else present


def _match(frame: pd.DataFrame, values: dict) -> np.ndarray:
    """The rows of a small frame (a figure's points) whose columns hold the given values (a
    None column is no condition)."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in values.items():
        if column is not None:
            mask &= (frame[column].astype(object) == value).to_numpy()
    return mask


#: What a line's band can show: the median's interval (the precision of the line), the spread of
#: the runs, or both.
BANDS = ("ci", "spread", "both")
#: Each band's columns of Table.point_stats, and how opaque it is drawn ("both": the spread light,
#: the interval dark).
_BAND_FILL = {"ci": [("ci_lo", "ci_hi", 0.25)], "spread": [("lo", "hi", 0.2)],
              "both": [("lo", "hi", 0.12), ("ci_lo", "ci_hi", 0.35)]}


def _draw_points(ax: plt.Axes, points: pd.DataFrame, *, x: str, colour: Any, marker: str, label: str | None,
                 band: str = "ci", linewidth: float = 1.5, markersize: float = 5, zorder: float = 2) -> None:
    """One line: the medians, and the band around them (see BANDS), drawn from aggregates that
    were computed out of core. A point whose interval could not be had (too few runs) has none."""
    shown = points[points["kept"] > 0]
    if shown.empty:
        return
    for low, high, alpha in _BAND_FILL[band]:
        ax.fill_between(shown[x].to_numpy(), shown[low].to_numpy(dtype=float), shown[high].to_numpy(dtype=float),
                        color=colour, alpha=alpha, linewidth=0, zorder=zorder - 0.5)
    ax.plot(shown[x].to_numpy(), shown["median"].to_numpy(), color=colour, marker=marker, markersize=markersize,
            markeredgecolor="white", markeredgewidth=0.75, linewidth=linewidth,
            label=label if label is not None else "_nolegend_", zorder=zorder)


def error_curve(
    data: Any,
    *,
    x: str,
    y: str,
    hue: str | None = None,
    style: str | None = None,
    hue_order: Sequence | None = None,
    palette: str | Sequence | dict = PALETTE,
    floor: str | None = None,
    theory: bool = True,
    fit_from: float | None = None,
    ax: plt.Axes | None = None,
    logx: bool | None = None,
    ylabel: str | None = None,
    legend_title: str | None = None,
    legend: str | bool = "best",
    band: str = "ci",
    ci: float = 0.95,
) -> plt.Axes:
    """Median |y| against x over the runs of each point, with a 10-90% band, on log axes.

    Parameters
    ----------
    data : DataFrame, path or study.analysis.Table
        Tidy results: one row per run (and checkpoint); a file is read a few columns at a
        time, never whole. Every axis that y depends on must take one value per point (x,
        hue, style): others are refused (PoolingError), not pooled.
    x, y : str
        Columns; y is drawn as a magnitude.
    hue : str, optional
        A column whose values get one colour each, in ``hue_order`` (default: the table's order).
    style : str, optional
        A column whose values get one marker each.
    palette : str, list or dict, default="colorblind"
        A dict maps hue values to colours (the same colours in every panel of a grid).
    floor : str, optional
        A least-squares column drawn in grey, e.g. ``ols_w_err_norm``: least squares on the same
        data, the floor any method can reach. One value per data stream.
    theory : bool, default=True
        Draw the theory of study.theory where it holds (see the module's docstring).
    fit_from : float, optional
        Fit a power law to each line (and the floor) over x >= fit_from, one unit per data
        stream, and show its slope with a 95% bootstrap interval in the legend (or why not).
    ax : Axes, optional
    logx : bool, optional
        Default: log where x spans a decade or more.
    legend : str or False, default="best"
        A matplotlib legend location, "outside" (right of the Axes), "below" (under it), or
        False (no legend; its entries stay on the Axes for a figure legend).
    band : {"ci", "spread", "both"}, default="ci"
        The band around each line: the ``ci`` interval of its median (the line's precision:
        distribution-free, from order statistics of the runs, none under 6 runs at 95%), the
        10-90% spread of the runs, or both (the spread light, the interval dark). The legend and
        the panel's note say which.

    Returns
    -------
    Axes
    """
    ax = ax if ax is not None else plt.gca()
    if band not in BANDS:
        raise ParameterError("band", "parameter of error_curve", f"one of {list(BANDS)}", band)
    t = open_table(data)
    refuse_pooling(t, [x, hue, style], y, "error_curve")
    logx = _log_scale(t, x) if logx is None else logx
    least_squares = y in LEAST_SQUARES
    keys = [c for c in dict.fromkeys((x, hue, style)) if c]
    off_axis = x if logx else None
    ranks = (lambda n: median_ranks(n, ci)) if band != "spread" else None
    points, counts = t.point_stats(keys, y, off_axis=off_axis, diverged=not least_squares, per_stream=least_squares,
                                   ranks=ranks)
    note = _left_out_text(counts, off_axis)
    levels = _levels(t, hue, hue_order)
    colours = palette if isinstance(palette, dict) else dict(zip(levels, sns.color_palette(palette, max(len(levels), 1))))

    def slope(part: Any) -> str:
        return _slope_text(part, x, y, fit_from, off_axis=off_axis, diverged=not least_squares,
                           per_stream=least_squares)

    styles = _levels(t, style) if style else [None]
    markers = dict(zip(styles, MARKERS * 4)) if style else {None: "o"}
    if hue:
        present = set(points.loc[points["kept"] > 0, hue].astype(object))
        lines = [(v, colours[v], format_value(v) + slope(t.select({hue: [v]}))) for v in levels if v in present]
    else:
        colour = (next(iter(palette.values())) if isinstance(palette, dict) and palette
                  else sns.color_palette(PALETTE if isinstance(palette, dict) else palette, 1)[0])
        lines = [(None, colour, f"SGD{slope(t)}" if fit_from is not None else None)]
    for value, colour, label in lines:
        for i, level in enumerate(styles):
            part = points[_match(points, {hue: value, style: level})] if (hue or style) else points
            _draw_points(ax, part, x=x, colour=colour, marker=markers[level], label=label if i == 0 else None,
                         band=band)
    if style:  # the markers' meaning, in grey: colours are the hue's
        for level in styles:
            ax.plot([], [], color="0.3", marker=markers[level], linestyle="", label=f"{style} = {format_value(level)}")
    high = points["high"].max() if len(points) else np.nan
    low = points["low"].min() if len(points) else np.nan
    if floor is not None:
        grey = _draw_floor(ax, t, x=x, floor=floor, logx=logx, fit_from=fit_from, band=band, ranks=ranks)
        low, high = np.nanmin([low, grey[0]]), np.nanmax([high, grey[1]])
    if theory and (points["kept"] > 0).any():
        # Theory may reach far below the data (the floor of an lr that SGD is far from
        # reaching): it is drawn within a decade of the data's range, so the axis follows the data.
        _draw_theory(ax, t, x=x, y=y, hue=hue, colours=colours, within=(low / 10, high * 10))
    for (_, _, alpha), words in zip(_BAND_FILL[band], _band_legend(band, ci)):  # what the band is, in grey
        if words not in ax.get_legend_handles_labels()[1]:
            ax.fill_between([], [], color="0.5", alpha=alpha, linewidth=0, label=words)
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(ylabel or LABELS.get(y, y))
    _legend(ax, legend, legend_title or (hue if hue and not style else None))
    # A point that lost runs (diverged ones) is the median of its survivors: it says how many.
    # Labels of nearby points (two hues diverging at the same x) are stacked, not overprinted.
    survivors = _survivors(points, x, hue)
    placed: list[tuple[float, float]] = []  # each label's anchor in points, offset included
    to_points = ax.transData + Affine2D().scale(72 / ax.figure.dpi)
    for (at_x, value, median), (kept, total) in survivors.items():
        colour = colours.get(value, "0.2") if hue else lines[0][1]
        px, py = to_points.transform((at_x, median))
        rise = 3.0
        while any(abs(px - qx) < 16 and abs(py + rise - qy) < 7 for qx, qy in placed):
            rise += 7
        placed.append((px, py + rise))
        ax.annotate(f"{kept}/{total}", (at_x, median), xytext=(3, rise), textcoords="offset points", fontsize=6,
                    color=colour)
    runs = "data sets" if least_squares else "runs"
    per_point = points["total"]
    count = f"{per_point.min()}" if per_point.min() == per_point.max() else f"{per_point.min()}–{per_point.max()}"
    if count == "1":
        runs = runs[:-1]  # "1 run", "1 data set"
    described = f"{_band_words(band, ci)} of {count} {runs} per point" if len(per_point) else "no runs"
    missing = ""
    if band != "spread" and len(per_point) and points.loc[points["kept"] > 0, "ci_lo"].isna().any():
        missing = f"no interval where under {_fewest(ci)}"
    marked = "a/b at a point: a of its b runs shown" if survivors else ""
    ax.text(0.99, 0.01, "\n".join(filter(None, [described, missing, note, marked])), transform=ax.transAxes, ha="right",
            va="bottom", fontsize="x-small", color="0.3",
            bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1})
    return ax


def _survivors(points: pd.DataFrame, x: str, hue: str | None) -> dict:
    """(x, hue value, median) -> (runs shown, runs) for the points that lost some of their runs."""
    lost = points[(points["kept"] > 0) & (points["kept"] < points["total"])]
    return {(row[x], row[hue] if hue else None, float(row["median"])): (int(row["kept"]), int(row["total"]))
            for _, row in lost.iterrows()}


def merged_legend(axes: Sequence[plt.Axes], ax: plt.Axes, *, title: str | None = None,
                  legend: str = "outside") -> None:
    """One legend on ``ax`` for the entries of every Axes in ``axes`` (each label once), so that
    a line drawn on one panel only (a theory curve) is explained too."""
    entries: dict[str, Any] = {}
    for a in axes:
        for handle, label in zip(*a.get_legend_handles_labels()):
            entries.setdefault(label, handle)
        if a.get_legend() is not None:
            a.get_legend().remove()
    ax.legend(list(entries.values()), list(entries), title=title, fontsize="small", title_fontsize="small",
              **_placement(legend))


def _legend(ax: plt.Axes, legend: str | bool, title: str | None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # a label drawn in several places (a theory line per lr) once
    handles, labels = list(unique.values()), list(unique)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if legend is False or not handles:
        return
    ax.legend(handles, labels, title=title, fontsize="small", title_fontsize="small", **_placement(legend))


def _placement(legend: str) -> dict:
    """A matplotlib location, or "outside" (right of the Axes) or "below" (under its x label)."""
    if legend == "outside":
        return {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    if legend == "below":
        return {"loc": "upper center", "bbox_to_anchor": (0.5, -0.13), "ncol": 2}
    return {"loc": legend}


def _band_legend(band: str, ci: float) -> list[str]:
    """The legend's words for each fill of a band (as _BAND_FILL draws them)."""
    words = {"ci": [f"band: the median's {ci:.0%} interval"], "spread": ["band: 10–90% of the runs"]}
    return words[band] if band in words else [*words["spread"], *words["ci"]]


def _band_words(band: str, ci: float) -> str:
    """What a panel's band is, for its note: 'median and its 95% interval'."""
    return {"ci": f"median and its {ci:.0%} interval", "spread": "median, 10–90%",
            "both": f"median, {ci:.0%} interval (dark), 10–90% (light)"}[band]


def _fewest(ci: float) -> str:
    """'6 runs': the fewest runs a median's interval at level ci can be had from."""
    n = 1
    while median_ranks(n, ci) is None:
        n += 1
    return f"{n} runs"


def _draw_floor(ax: plt.Axes, t: Table, *, x: str, floor: str, logx: bool, fit_from: float | None,
                band: str = "spread", ranks: Any = None) -> tuple[float, float]:
    """Least squares on the same data: grey, one value per data stream and x. Returns the
    smallest and largest value it shows."""
    refuse_pooling(t, [x], floor, "error_curve (its least-squares floor)")
    off_axis = x if logx else None
    points, _ = t.point_stats([x], floor, off_axis=off_axis, diverged=False, per_stream=True, ranks=ranks)
    # the floor's slope over every x: least squares has no optimisation gap to wait out
    shown = points.loc[points["kept"] > 0, x]
    fit_all = None if fit_from is None or shown.empty else shown.min()
    label = "least squares on the same data" + _slope_text(t, x, floor, fit_all, off_axis=off_axis, diverged=False,
                                                            per_stream=True)
    _draw_points(ax, points, x=x, colour="0.45", marker="s", label=label, band=band, linewidth=1.2, markersize=3)
    return (points["low"].min(), points["high"].max()) if len(points) else (np.nan, np.nan)


def _slope_text(t: Table, x: str, column: str, fit_from: float | None, *, off_axis: str | None, diverged: bool,
                per_stream: bool) -> str:
    """' (slope -0.55 [-0.61, -0.51])', from one value per data stream; or why there is none."""
    if fit_from is None:
        return ""
    units = t.filter(f"{quote(x)} >= {literal(fit_from)}").stream_values(
        [x], column, off_axis=off_axis, diverged=diverged, per_stream=per_stream)
    sizes = units[x].nunique()
    if sizes < MIN_FIT_LEVELS:
        return f" (no slope: {sizes} {x} ≥ {format_value(fit_from)})"
    fit = fit_power_law(units[x], units["v"], units=units["seed"] if "seed" in units else None)
    return f" (slope {fit.slope:.2f} [{fit.low:.2f}, {fit.high:.2f}])"


# --- theory on the figures ---------------------------------------------------------------------

def _single(t: Table, column: str) -> Any:
    """The one value a column takes in the table, or None (absent, or several)."""
    if column not in t.columns:
        return None
    values = t.values(column)
    return values[0] if len(values) == 1 else None


def _gaussian_noise_var(t: Table) -> float | None:
    """σ² where the rows share one Gaussian noise level, else None: the quantiles of least
    squares and the panels' theory hold for Gaussian noise only."""
    if _single(t, "noise_kind") != "gaussian" or _single(t, "noise") is None:
        return None
    return float(theory.noise_variance(float(_single(t, "noise")), "gaussian"))


def _draw_theory(ax: plt.Axes, t: Table, *, x: str, y: str, hue: str | None, colours: dict,
                 within: tuple[float, float]) -> None:
    """Dashed theory where it holds: the least-squares median of ‖ŵ_ols − w‖ (and its 10-90%
    on a least-squares panel), and the stationary error of SGD on the squared loss."""
    if y not in ("w_err_norm", "ols_w_err_norm") or x not in t.columns:
        return
    d = feature_count(t)
    if d == 0 or not t.numeric(x):
        return
    xs = t.values(x)
    lo, hi = float(min(v for v in xs if v > 0)), float(max(xs))
    groups = [(None, t)] if hue is None else [(v, t.select({hue: [v]})) for v in t.values(hue)]
    drawn_ols: set = set()
    for value, part in groups:
        noise_var = _gaussian_noise_var(part)
        if noise_var is None:
            continue
        n_fixed = _single(part, "num_train")
        if x == "num_train" or n_fixed is not None:
            key = (noise_var, n_fixed if x != "num_train" else None)
            if key not in drawn_ols:
                drawn_ols.add(key)
                _theory_least_squares(ax, x=x, lo=lo, hi=hi, n_fixed=n_fixed, d=d, noise_var=noise_var,
                                      band=y == "ols_w_err_norm", within=within)
        if y == "w_err_norm" and _single(part, "loss") == "squared":
            colour = colours.get(value, "0.2") if value is not None else "0.2"
            _theory_sgd(ax, part, x=x, lo=lo, hi=hi, d=d, noise_var=noise_var, colour=colour, within=within)


def _theory_least_squares(ax, *, x, lo, hi, n_fixed, d, noise_var, band, within) -> None:
    label = "theory: least squares, median" + (" and 10–90%" if band else "") + " (Gaussian noise)"
    if x == "num_train":
        n = np.unique(np.round(np.geomspace(max(lo, d + 1), hi, 200)))
        xs = n
    else:
        n, xs = np.array([float(n_fixed)] * 2), np.array([lo, hi])
    for q, style in ((0.5, "--"),) + (((0.1, ":"), (0.9, ":")) if band else ()):
        ys = theory.ols_w_err_norm_quantile(q, n, d, noise_var)
        ok = np.isfinite(ys) & (ys >= within[0]) & (ys <= within[1])
        ax.plot(xs[ok], ys[ok], linestyle=style, color="black", linewidth=1.1 if q == 0.5 else 0.8,
                label=label if q == 0.5 else None, zorder=4)


_SGD_FLOOR = "theory: SGD noise floor, RMS (squared loss, online limit)"
_SGD_EDGE = "theory: SGD stability edge (squared loss, online limit)"


def _theory_sgd(ax, part: Table, *, x, lo, hi, d, noise_var, colour, within) -> None:
    """√E‖ŵ − w‖² where constant-lr SGD settles (online limit), and the stability edge on an lr axis.

    The lines take their lr's colour; the legend says once, in grey, what such a line is.
    """
    batch, reduction = _single(part, "batch_size"), _single(part, "reduction")
    if batch is None or reduction is None:
        return
    if x == "lr":
        edge = float(theory.sgd_stability_edge(int(batch), d, str(reduction)))
        xs = np.geomspace(lo, min(hi, edge), 200)
        ys = np.sqrt(theory.sgd_stationary_w_err_sq(xs, int(batch), d, noise_var, str(reduction)))
        if lo <= edge <= hi:
            ax.axvline(edge, linestyle=":", color=colour, linewidth=1.1, zorder=4)
            _proxy(ax, _SGD_EDGE, ":")
    else:
        lr = _single(part, "lr")
        if lr is None:
            return
        xs = np.array([lo, hi])
        ys = np.sqrt(theory.sgd_stationary_w_err_sq(np.full(2, float(lr)), int(batch), d, noise_var, str(reduction)))
    ok = np.isfinite(ys) & (ys >= within[0]) & (ys <= within[1])
    if ok.any():
        ax.plot(xs[ok], ys[ok], linestyle="--", color=colour, linewidth=1.0, zorder=4)
        _proxy(ax, _SGD_FLOOR, "--")


def _proxy(ax: plt.Axes, label: str, linestyle: str) -> None:
    if label not in ax.get_legend_handles_labels()[1]:
        ax.plot([], [], linestyle=linestyle, color="0.5", label=label)


# --- the figure-level function ---------------------------------------------------------------------

def error_facets(
    data: Any,
    *,
    x: str,
    y: str = "w_err_norm",
    hue: str | None = None,
    style: str | None = None,
    col: str | None = None,
    row: str | None = None,
    hue_order: Sequence | None = None,
    floor: str | None = "auto",
    theory: bool = True,
    fit_from: float | None = None,
    logx: bool | None = None,
    title: str | None = None,
    band: str = "ci",
    ci: float = 0.95,
    height: float = 3.6,
    aspect: float = 1.35,
) -> sns.FacetGrid:
    """Median |y| against x, one line per hue (and style), one panel per col and row value:
    seaborn's ``relplot(kind="line")``, with the conventions of this module.

    Parameters
    ----------
    data : DataFrame, path or study.analysis.Table
        Tidy results, filtered to what the figure shows (one epoch, unless epoch is on it).
        Every axis that y depends on must be on the figure or take one value: the figure
        refuses (PoolingError, naming the axes and their values) rather than pool them.
    x, y, hue, style : str
        As :func:`error_curve`.
    col, row : str, optional
        Columns whose values get one panel each.
    floor : str or None, default="auto"
        The least-squares column drawn in grey; "auto": the twin of y (``ols_w_err_norm`` for
        ``w_err_norm``) where the data's axes take one value per panel and x.
    title : str, optional
        The figure's title; under it, a line says what the figure holds fixed (every axis of
        one value that is not on it, the epoch first: :func:`held_fixed`). The estimator and
        band are said on each panel.
    band, ci : as :func:`error_curve`.

    Returns
    -------
    FacetGrid

    Examples
    --------
    >>> g = error_facets(df[df["epoch"] == 10], x="num_train", y="w_err_norm", hue="lr", col="loss")  # doctest: +SKIP
    >>> save_figure(g.figure, "figures/error.pdf")  # doctest: +SKIP
    """
    where = "parameter of error_facets"
    t = open_table(data)
    check_roles(t, where=where, x=x, y=y, hue=hue, style=style, col=col, row=row)
    pooled = t.varying([x, hue, style, col, row], axes_of(y))
    if pooled:
        raise PoolingError(pooled, "error_facets")
    if floor == "auto":
        twin = FLOORS.get(y)
        floor = twin if twin in t.columns and not t.varying([x, col, row], DATA_AXES) else None
    logx = _log_scale(t, x) if logx is None else logx
    levels = _levels(t, hue, hue_order)
    colours = dict(zip(levels, sns.color_palette(PALETTE, max(len(levels), 1))))
    rows, cols = _levels(t, row) or [None], _levels(t, col) or [None]
    # The grid is laid out from the panels' values alone; each panel's rows stay in the table.
    panels = pd.DataFrame([{**({row: r} if row else {}), **({col: c} if col else {})} for r in rows for c in cols])
    # A long single row of panels wraps (seaborn's col_wrap), so that each panel keeps its size.
    wrap = COL_WRAP if row is None and len(cols) > COL_WRAP + 1 else None
    g = sns.FacetGrid(panels, col=col, row=row, col_order=cols if col else None, row_order=rows if row else None,
                      col_wrap=wrap, height=height, aspect=aspect, sharex=True, sharey=True, despine=False)
    grid_axes = g.axes.reshape(1, -1) if wrap else g.axes
    entries: dict[str, Any] = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = grid_axes[i, j]
            part = t.select({k: [v] for k, v in ((row, r), (col, c)) if k})
            if part.count() == 0:
                ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", color="0.4")
                continue
            error_curve(part, x=x, y=y, hue=hue, style=style, hue_order=levels, palette=colours, floor=floor,
                        theory=theory, fit_from=fit_from, ax=ax, logx=logx, band=band, ci=ci,
                        legend="best" if fit_from is not None else False, legend_title=hue)
            if fit_from is None:
                for handle, label in zip(*ax.get_legend_handles_labels()):
                    entries.setdefault(label, handle)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            grid_axes[i, j].set_title(", ".join(f"{k} = {format_value(v)}" for k, v in ((row, r), (col, c)) if k))
    g.set_axis_labels(LABELS.get(x, x), LABELS.get(y, y))
    if entries:
        g.add_legend(legend_data=entries, title=hue if hue and not style else None, label_order=list(entries))
        g.legend.set_title(g.legend.get_title().get_text(), prop={"size": "small"})
        for text in g.legend.get_texts():
            text.set_fontsize("small")
    held = held_fixed(t, [x, hue, style, col, row])
    heading = "\n".join(filter(None, [title, held]))
    if heading:
        g.figure.suptitle(heading, y=1.0, va="bottom")
    return g


def held_fixed(data: Any, placed: Sequence[str | None] = ()) -> str:
    """What a figure holds fixed, in words, for its title: every axis that takes one value and
    is not on the figure, epoch first ("held fixed: epoch 10, lr = 0.03, noise_kind = gaussian,
    noise = 0.01, ..."); empty where nothing is."""
    t = open_table(data)
    single = {a: t.values(a) for a in AXES if a in t.columns and a not in placed}
    parts = [f"epoch {format_value(single.pop('epoch')[0])}"] if len(single.get("epoch", ())) == 1 else []
    parts += [f"{a} = {format_value(v[0])}" for a, v in single.items() if len(v) == 1]
    return f"held fixed: {', '.join(parts)}" if parts else ""


# --- heatmaps ----------------------------------------------------------------------------------------

def lr_epoch_heatmap(data: Any, *, value: str = "w_err_norm", ax: plt.Axes | None = None,
                     norm: LogNorm | None = None, cells: pd.DataFrame | None = None) -> plt.Axes:
    """Median |value| over the runs of each (lr, epoch), on a log colour scale; epoch 0 (the
    start) is not shown.

    A cell where more than half the runs diverged is marked "div." and left uncoloured;
    cells where some diverged say how many. Every other axis must take one value (else
    PoolingError). ``norm`` shares one colour scale between heatmaps; ``cells``: this panel's
    rows of Table.lr_epoch_cells, where the caller has them.
    """
    ax = ax if ax is not None else plt.gca()
    t = open_table(data)
    refuse_pooling(t, ["lr", "epoch"], value, "lr_epoch_heatmap")
    cells = t.lr_epoch_cells(value) if cells is None else cells
    median = cells.pivot(index="lr", columns="epoch", values="median").astype(float)
    share = cells.pivot(index="lr", columns="epoch", values="share")
    count = cells.pivot(index="lr", columns="epoch", values="diverged")
    median = median.where(share <= 0.5)
    annot = median.map(lambda v: "" if np.isnan(v) else f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e"))
    for (lr, epoch), n in count.stack().items():
        if n and share.loc[lr, epoch] <= 0.5:
            annot.loc[lr, epoch] += f"\n({int(n)} div.)"
    norm = norm or _log_norm([median])
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


def _log_norm(medians: Sequence[pd.DataFrame]) -> LogNorm | None:
    values = np.concatenate([m.to_numpy(dtype=float).ravel() for m in medians])
    values = values[np.isfinite(values) & (values > 0)]
    return LogNorm(vmin=values.min(), vmax=values.max()) if len(values) else None


def heatmap_facets(data: Any, *, value: str = "w_err_norm", col: str | None = None, row: str | None = None,
                   title: str | None = None) -> plt.Figure:
    """One :func:`lr_epoch_heatmap` per col and row value, on one colour scale."""
    where = "parameter of heatmap_facets"
    t = open_table(data)
    check_roles(t, where=where, y=value, col=col, row=row)
    refuse_pooling(t, ["lr", "epoch", col, row], value, "heatmap_facets")
    cols, rows = _levels(t, col) or [None], _levels(t, row) or [None]
    n_lr = len(t.values("lr"))
    panels = [k for k in (row, col) if k]
    cells = t.lr_epoch_cells(value, panels)  # every panel's cells in one query
    # A long single row of panels wraps at COL_WRAP, as error_facets' do.
    wrap = COL_WRAP if row is None and len(cols) > COL_WRAP + 1 else len(cols)
    shape = (len(rows) * -(-len(cols) // wrap), wrap)
    fig, grid = plt.subplots(*shape, figsize=(6.5 * shape[1], (0.45 * n_lr + 1.6) * shape[0]), squeeze=False)
    parts = {(i, j): cells[_match(cells, {row: r, col: c})]
             for i, r in enumerate(rows) for j, c in enumerate(cols)}
    norm = _log_norm([cells[["median"]]])
    for ax in grid.flat[len(parts):]:  # the wrapped grid's unused places
        ax.set_axis_off()
    for (i, j), part in parts.items():
        ax = grid.flat[i * len(cols) + j]
        if part.empty:
            ax.set_axis_off()
            continue
        lr_epoch_heatmap(t.select({k: [v] for k, v in ((row, rows[i]), (col, cols[j])) if k}), value=value, ax=ax,
                         norm=norm, cells=part)
        ax.set_title(", ".join(f"{k} = {format_value(v)}" for k, v in ((row, rows[i]), (col, cols[j])) if k))
    heading = "\n".join(filter(None, [title, held_fixed(t, ["lr", "epoch", col, row])]))
    if heading:
        fig.suptitle(heading)
    fig.tight_layout()
    return fig


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
        axes[1].plot(r, np.clip(r / sigma, -1, 1), color=color, label=f"Huber σ={sigma:g}: r/σ, clipped at ±1")
    axes[0].set(xlabel="residual r = ŷ − y", ylabel="loss l(r)", ylim=(0, span**2 / 2))
    axes[1].set(xlabel="residual r = ŷ − y", ylabel="derivative l′(r)", ylim=(-3, 3))
    for ax in axes:
        ax.axhline(0, color="0.8", linewidth=0.8)
        ax.legend(fontsize="small")
    return axes


#: Metadata that would change from one save to the next (dates), removed so that a figure that
#: did not change writes the same bytes.
_METADATA = {".png": {"Software": None}, ".svg": {"Date": None, "Creator": None},
             ".pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def save_figure(fig: plt.Figure, path: str | Path, formats: Sequence[str] | None = None) -> list[Path]:
    """Write the figure to ``path`` in the format its extension names (PNG, SVG or PDF), or in
    each of ``formats`` (extensions, e.g. (".png", ".svg")) beside it; then close it.

    The folder must exist: where outputs may create folders is the command's rule (study.cli).
    Files carry no timestamps, so a figure that did not change writes the same bytes.
    """
    path = Path(path)
    suffixes = [path.suffix.lower()] if formats is None else [s.lower() for s in formats]
    bad = [s for s in suffixes if s not in FIGURE_FORMATS]
    if bad:
        raise ParameterError("path", "parameter of save_figure", "a path ending in .png, .svg or .pdf", str(path))
    plt.rcParams["svg.hashsalt"] = "estimation-study"  # SVG element ids from a fixed salt, not a random one
    written = []
    for suffix in suffixes:
        target = path.with_suffix(suffix)
        fig.savefig(target, dpi=110, bbox_inches="tight", metadata=_METADATA[suffix])
        written.append(target)
    plt.close(fig)
    return written
