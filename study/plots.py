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
  names the axes and their values; :func:`nested_loop` refuses where one is not among its
  factors. Replicates are what a band is over, never an axis.
- Least squares depends on the data alone: it is drawn once per data stream (the ``seed``
  column), however many learning rates or losses were trained on that data.
- Dashes mean theory (study.theory), drawn only where it holds: black for least squares
  (Gaussian noise), in a line's colour for the noise floor of constant-lr SGD on the squared
  loss, with heavy-ball momentum where runs have it (Gaussian noise; never for Huber, a decaying
  lr, averaging or weight decay, where it does not hold). Measured least squares is grey, solid, square markers.
  ``style`` is drawn with markers, never with dashes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed or assumed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure, SubFigure  # noqa: E402
from matplotlib.transforms import Affine2D  # noqa: E402

from . import theory  # noqa: E402
from .analysis import Table, literal, open_table, quote  # noqa: E402
from .errors import ParameterError, PoolingError
from .fits import MIN_FIT_LEVELS, fit_power_law
from .selection import LEAST_SQUARES, at_epoch, axes_of
from .summaries import PAIRED, fewest_runs, median_ranks
from .vocabulary import AXES, DATA_AXES, FIGURE_FORMATS, LATER_DEFAULTS, OPTIMIZER_DEFAULTS, average_text  # noqa: E402
from .words import describe_axes, format_value, values_text

__all__ = [
    "error_facets",
    "error_curve",
    "nested_loop",
    "lr_epoch_heatmap",
    "heatmap_facets",
    "loss_shapes",
    "draw_figure",
    "draw_xy",
    "GENERIC_FIGURES",
    "save_figure",
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
FLOORS = PAIRED
#: The columns a figure puts its lines and panels on (x and y aside).
ROLES = ("hue", "style", "col", "row")
#: Panels in a row of a faceted figure with no ``row``, before it wraps to the next.
COL_WRAP = 4
#: Markers for ``style``: dashes are kept for theory.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Columns that are never a role: replicates are the unit a band is over.
_NOT_ROLES = ("replicate", "seed", "diverged")


def feature_count(data: Any) -> int:
    """d, the number of features, where the rows have one (``num_inputs``; a table from before
    that column has one ``w_err_j`` column per feature); 0 where they have several."""
    t = open_table(data)
    if "num_inputs" in t.columns:
        values = t.values("num_inputs")
        return int(values[0]) if len(values) == 1 else 0
    return sum(1 for c in t.columns if re.fullmatch(r"w_err_\d+", str(c)))


def _left_out_text(counts: dict[str, int], x: str | None) -> str:
    """'left out: 2 diverged, 1 at epoch 0 (log axis) (of 40)', from Table.point_stats' counts."""
    at = f"at {x} ≤ 0" if x is None or counts["off_nonzero"] else f"at {x} 0"
    parts = [
        f"{n} {why}"
        for n, why in (
            (counts["diverged"], "diverged"),
            (counts["off_axis"], f"{at} (log axis)"),
            (counts["zero"], "exactly 0"),
            (counts["other"], "not finite"),
        )
        if n
    ]
    return f"left out: {', '.join(parts)} (of {counts['rows']})" if parts else ""


def left_out_note(data: Any, column: str, *, x: str | None = None, diverged: bool = True) -> str:
    """A note counting the rows a log axis cannot show, and why: diverged runs, rows at
    ``x`` <= 0 on a log x axis (epoch 0, the start), values exactly 0, values not finite.
    ``diverged=False`` keeps diverged runs (for least squares, which never diverges)."""
    t = open_table(data)
    _, counts = t.point_stats([x] if x else [], column, off_axis=x, diverged=diverged)
    return _left_out_text(counts, x)


def check_roles(data: Any, *, where: str, x: str | None = None, y: str | None = None, **roles: str | None) -> None:
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
_BAND_FILL = {
    "ci": [("ci_lo", "ci_hi", 0.25)],
    "spread": [("lo", "hi", 0.2)],
    "both": [("lo", "hi", 0.12), ("ci_lo", "ci_hi", 0.35)],
}


def _draw_points(
    ax: plt.Axes,
    points: pd.DataFrame,
    *,
    x: str,
    colour: Any,
    marker: str,
    label: str | None,
    band: str = "ci",
    linewidth: float = 1.5,
    markersize: float = 5,
    zorder: float = 2,
) -> None:
    """One line: the medians, and the band around them (see BANDS), drawn from aggregates that
    were computed out of core. A point whose interval could not be had (too few runs) has none."""
    shown = points[points["kept"] > 0]
    if shown.empty:
        return
    for low, high, alpha in _BAND_FILL[band]:
        ax.fill_between(
            shown[x].to_numpy(),
            shown[low].to_numpy(dtype=float),
            shown[high].to_numpy(dtype=float),
            color=colour,
            alpha=alpha,
            linewidth=0,
            zorder=zorder - 0.5,
        )
    ax.plot(
        shown[x].to_numpy(),
        shown["median"].to_numpy(),
        color=colour,
        marker=marker,
        markersize=markersize,
        markeredgecolor="white",
        markeredgewidth=0.75,
        linewidth=linewidth,
        label=label if label is not None else "_nolegend_",
        zorder=zorder,
    )


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
    legend: str | Literal[False] = "best",
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
    points, counts = t.point_stats(
        keys, y, off_axis=off_axis, diverged=not least_squares, per_stream=least_squares, ranks=ranks
    )
    note = _left_out_text(counts, off_axis)
    levels = _levels(t, hue, hue_order)
    colours = (
        palette if isinstance(palette, dict) else dict(zip(levels, sns.color_palette(palette, max(len(levels), 1))))
    )

    def slope(part: Any) -> str:
        return _slope_text(
            part, x, y, fit_from, off_axis=off_axis, diverged=not least_squares, per_stream=least_squares
        )

    styles = _levels(t, style) if style else [None]
    markers = dict(zip(styles, MARKERS * 4)) if style else {None: "o"}
    lines: list[tuple[Any, Any, str | None]]  # (hue value, colour, label)
    if hue:
        present = set(points.loc[points["kept"] > 0, hue].astype(object))
        lines = [(v, colours[v], format_value(v) + slope(t.select({hue: [v]}))) for v in levels if v in present]
    else:
        colour = (
            next(iter(palette.values()))
            if isinstance(palette, dict) and palette
            else sns.color_palette(PALETTE if isinstance(palette, dict) else palette, 1)[0]
        )
        lines = [(None, colour, f"SGD{slope(t)}" if fit_from is not None else None)]
    for value, colour, label in lines:
        for i, level in enumerate(styles):
            part = points[_match(points, {hue: value, style: level})] if (hue or style) else points
            _draw_points(
                ax, part, x=x, colour=colour, marker=markers[level], label=label if i == 0 else None, band=band
            )
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
        _draw_theory(ax, t, x=x, y=y, hue=hue, colours=colours, within=(low / 10, high * 10), logx=logx)
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
        # Left of a point near the right edge (it would be cut off there), on a white ground
        # where a line passes under it.
        right = ax.transAxes.inverted().transform(ax.transData.transform((at_x, median)))[0] > 0.85
        ax.annotate(
            f"{kept}/{total}",
            (at_x, median),
            xytext=(-3 if right else 3, rise),
            textcoords="offset points",
            fontsize=6,
            color=colour,
            ha="right" if right else "left",
            bbox={"facecolor": "white", "alpha": 0.75, "linewidth": 0, "pad": 0.5},
        )
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
    corner = _emptiest_corner(ax)
    ax.text(
        corner[0],
        corner[1],
        "\n".join(filter(None, [described, missing, note, marked])),
        transform=ax.transAxes,
        ha="right" if corner[0] > 0.5 else "left",
        va="bottom" if corner[1] < 0.5 else "top",
        fontsize="x-small",
        color="0.3",
        bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1},
        zorder=6,
    )
    return ax


#: The corners a panel's note may take, in the order preferred on a tie (axes coordinates).
_CORNERS = ((0.99, 0.01), (0.01, 0.01), (0.99, 0.99), (0.01, 0.99))


def _emptiest_corner(ax: plt.Axes, size: tuple[float, float] = (0.42, 0.2)) -> tuple[float, float]:
    """The corner of the panel where its note covers the least: the fewest points of its lines
    and bands (in axes coordinates) within ``size`` of the corner, and none where the panel's
    own legend is."""
    ax.autoscale_view()
    to_axes = ax.transData + ax.transAxes.inverted()
    # matplotlib types get_xydata() and Path.vertices as ArrayLike: they are arrays (N, 2)
    points = [to_axes.transform(line.get_xydata()) for line in ax.lines if len(line.get_xydata())]  # type: ignore[arg-type]
    for collection in ax.collections:
        for path in collection.get_paths():
            if len(path.vertices):  # type: ignore[arg-type]
                points.append(to_axes.transform(path.vertices))
    xy = np.concatenate(points) if points else np.empty((0, 2))
    legend = ax.get_legend()
    box = None  # the legend's extent in axes coordinates, where it lies on the panel
    if legend is not None:
        # matplotlib types the canvas as FigureCanvasBase; under the Agg backend (set above) it has get_renderer
        renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
        extent = legend.get_window_extent(renderer).transformed(ax.transAxes.inverted())
        if extent.x1 > 0 and extent.x0 < 1 and extent.y1 > 0 and extent.y0 < 1:
            box = extent

    def covered(corner: tuple[float, float]) -> float:
        x0, x1 = sorted((corner[0], corner[0] + (size[0] if corner[0] < 0.5 else -size[0])))
        y0, y1 = sorted((corner[1], corner[1] + (size[1] if corner[1] < 0.5 else -size[1])))
        if box is not None and box.x0 < x1 and box.x1 > x0 and box.y0 < y1 and box.y1 > y0:
            return np.inf
        inside = (xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1)
        return float(inside.sum())

    return min(_CORNERS, key=covered)


def _survivors(points: pd.DataFrame, x: str, hue: str | None) -> dict:
    """(x, hue value, median) -> (runs shown, runs) for the points that lost some of their runs."""
    lost = points[(points["kept"] > 0) & (points["kept"] < points["total"])]
    return {
        (row[x], row[hue] if hue else None, float(row["median"])): (int(row["kept"]), int(row["total"]))
        for _, row in lost.iterrows()
    }


def merged_legend(axes: Sequence[plt.Axes], ax: plt.Axes, *, title: str | None = None, legend: str = "outside") -> None:
    """One legend on ``ax`` for the entries of every Axes in ``axes`` (each label once), so that
    a line drawn on one panel only (a theory curve) is explained too."""
    entries: dict[str, Any] = {}
    for a in axes:
        for handle, label in zip(*a.get_legend_handles_labels()):
            entries.setdefault(label, handle)
        old = a.get_legend()
        if old is not None:
            old.remove()
    ax.legend(
        list(entries.values()),
        list(entries),
        title=title,
        fontsize="small",
        title_fontsize="small",
        **_placement(legend),
    )


def _legend(ax: plt.Axes, legend: str | Literal[False], title: str | None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # a label drawn in several places (a theory line per lr) once
    handles, labels = list(unique.values()), list(unique)
    old = ax.get_legend()
    if old is not None:
        old.remove()
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
    return {
        "ci": f"median and its {ci:.0%} interval",
        "spread": "median, 10–90%",
        "both": f"median, {ci:.0%} interval (dark), 10–90% (light)",
    }[band]


def _fewest(ci: float) -> str:
    """'6 runs': the fewest runs a median's interval at level ci can be had from."""
    return f"{fewest_runs(ci)} runs"


def _draw_floor(
    ax: plt.Axes,
    t: Table,
    *,
    x: str,
    floor: str,
    logx: bool,
    fit_from: float | None,
    band: str = "spread",
    ranks: Any = None,
) -> tuple[float, float]:
    """Least squares on the same data: grey, one value per data stream and x. Returns the
    smallest and largest value it shows."""
    refuse_pooling(t, [x], floor, "error_curve (its least-squares floor)")
    off_axis = x if logx else None
    points, _ = t.point_stats([x], floor, off_axis=off_axis, diverged=False, per_stream=True, ranks=ranks)
    # the floor's slope over every x: least squares has no optimisation gap to wait out
    shown = points.loc[points["kept"] > 0, x]
    fit_all = None if fit_from is None or shown.empty else shown.min()
    label = "least squares on the same data" + _slope_text(
        t, x, floor, fit_all, off_axis=off_axis, diverged=False, per_stream=True
    )
    _draw_points(ax, points, x=x, colour="0.45", marker="s", label=label, band=band, linewidth=1.2, markersize=3)
    return (points["low"].min(), points["high"].max()) if len(points) else (np.nan, np.nan)


def _slope_text(
    t: Table, x: str, column: str, fit_from: float | None, *, off_axis: str | None, diverged: bool, per_stream: bool
) -> str:
    """' (slope -0.55 [-0.61, -0.51])', from one value per data stream; or why there is none."""
    if fit_from is None:
        return ""
    units = t.filter(f"{quote(x)} >= {literal(fit_from)}").stream_values(
        [x], column, off_axis=off_axis, diverged=diverged, per_stream=per_stream
    )
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


def _draw_theory(
    ax: plt.Axes,
    t: Table,
    *,
    x: str,
    y: str,
    hue: str | None,
    colours: dict,
    within: tuple[float, float],
    logx: bool = True,
) -> None:
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
                _theory_least_squares(
                    ax,
                    x=x,
                    lo=lo,
                    hi=hi,
                    n_fixed=n_fixed,
                    d=d,
                    noise_var=noise_var,
                    band=y == "ols_w_err_norm",
                    within=within,
                )
        if y == "w_err_norm" and _single(part, "loss") == "squared" and _floor_momentum(part) is not None:
            colour = colours.get(value, "0.2") if value is not None else "0.2"
            _theory_sgd(
                ax,
                part,
                x=x,
                lo=lo,
                hi=hi,
                d=d,
                noise_var=noise_var,
                colour=colour,
                within=within,
                logx=logx,
                name=format_value(value) if value is not None and len(groups) > 1 else None,
            )


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
        ax.plot(
            xs[ok],
            ys[ok],
            linestyle=style,
            color="black",
            linewidth=1.1 if q == 0.5 else 0.8,
            label=label if q == 0.5 else None,
            zorder=4,
        )


_SGD_FLOOR = "theory: SGD noise floor, RMS (squared loss, online limit)"
_SGD_EDGE = "theory: SGD stability edge (squared loss, online limit)"


#: The share of the x axis (from its right end) a floor of SGD spans where x is not the lr: beside
#: the lines' ends, where SGD reaches it, so that each floor is read against its own line.
_FLOOR_SPAN = 0.3


def _theory_sgd(
    ax, part: Table, *, x, lo, hi, d, noise_var, colour, within, logx: bool = True, name: str | None = None
) -> None:
    """√E‖ŵ − w‖² where constant-lr SGD settles (online limit), and the stability edge on an lr axis.

    The lines take their lr's colour; the legend says once, in grey, what such a line is. On
    another x axis a floor is a short dash at the right, labelled ``name`` (the line's hue
    value) at its left end where there are several.
    """
    batch, reduction, beta = _single(part, "batch_size"), _single(part, "reduction"), _floor_momentum(part)
    if batch is None or reduction is None or beta is None:
        return

    def floor(lrs: np.ndarray) -> np.ndarray:  # heavy-ball's exact floor (plain SGD's at β = 0)
        return np.sqrt(theory.sgd_momentum_stationary_w_err_sq(lrs, beta, int(batch), d, noise_var, str(reduction)))

    if x == "lr":
        edge = float(theory.sgd_momentum_stability_edge(beta, int(batch), d, str(reduction)))
        xs = np.geomspace(lo, min(hi, edge), 200)
        ys = floor(xs)
        if lo <= edge <= hi:
            ax.axvline(edge, linestyle=":", color=colour, linewidth=1.1, zorder=4)
            _proxy(ax, _SGD_EDGE, ":")
    else:
        lr = _single(part, "lr")
        if lr is None:
            return
        start = lo * (hi / lo) ** (1 - _FLOOR_SPAN) if logx and lo > 0 else hi - _FLOOR_SPAN * (hi - lo)
        xs = np.array([start, hi])
        ys = floor(np.full(2, float(lr)))
    ok = np.isfinite(ys) & (ys >= within[0]) & (ys <= within[1])
    if ok.any():
        ax.plot(xs[ok], ys[ok], linestyle="--", color=colour, linewidth=1.2 if x != "lr" else 1.0, zorder=4)
        _proxy(ax, _SGD_FLOOR + (_RAGGED if _ragged(part, int(batch)) else ""), "--")
        if x != "lr" and name is not None:
            ax.annotate(
                name,
                (xs[0], ys[0]),
                xytext=(-2, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize=6,
                color=colour,
                zorder=5,
                bbox={"facecolor": "white", "alpha": 0.75, "linewidth": 0, "pad": 0.3},
            )


#: What the floor leaves out where an epoch ends on a smaller minibatch, whose noisier step the
#: end-of-epoch error carries (drop_last takes it away).
_RAGGED = ",\nminibatches of batch_size only: not the ragged last one"


def _ragged(part: Table, batch: int) -> bool:
    """Whether some run's epochs end on a ragged minibatch: num_train % batch_size > 0, kept."""
    if "drop_last" in part.columns and not any(_plain_sgd("drop_last", v) for v in part.values("drop_last")):
        return False  # every run drops it
    return any(int(n) % batch for n in part.values("num_train"))


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
    g = sns.FacetGrid(
        panels,
        col=col,
        row=row,
        col_order=cols if col else None,
        row_order=rows if row else None,
        col_wrap=wrap,
        height=height,
        aspect=aspect,
        sharex=True,
        sharey=True,
        despine=False,
    )
    grid_axes = g.axes.reshape(1, -1) if wrap else g.axes
    entries: dict[str, Any] = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = grid_axes[i, j]
            part = t.select({k: [v] for k, v in ((row, r), (col, c)) if k})
            if part.count() == 0:
                ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", color="0.4")
                continue
            error_curve(
                part,
                x=x,
                y=y,
                hue=hue,
                style=style,
                hue_order=levels,
                palette=colours,
                floor=floor,
                theory=theory,
                fit_from=fit_from,
                ax=ax,
                logx=logx,
                band=band,
                ci=ci,
                legend="best" if fit_from is not None else False,
                legend_title=hue,
            )
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
    noise = 0.01, ..."); empty where nothing is. The optimiser's axes at their defaults (plain
    SGD: no decay, momentum, weight decay or averaging) go unsaid, as every figure's baseline."""
    t = open_table(data)
    single = {a: t.values(a) for a in AXES if a in t.columns and a not in placed}
    parts = [f"epoch {format_value(single.pop('epoch')[0])}"] if len(single.get("epoch", ())) == 1 else []
    parts += [f"{a} = {format_value(v[0])}" for a, v in single.items() if len(v) == 1 and not _plain_sgd(a, v[0])]
    return f"held fixed: {', '.join(parts)}" if parts else ""


def _floor_momentum(t: Table) -> float | None:
    """The momentum β of runs for which the constant-lr noise floor and stability edge hold:
    constant-lr SGD, last iterate, no weight decay (the optimiser's other axes at their defaults,
    or absent), with one β (0 where absent: plain SGD); None where they do not hold."""
    if not all(
        a not in t.columns or all(_plain_sgd(a, v) for v in t.values(a)) for a in OPTIMIZER_DEFAULTS if a != "momentum"
    ):
        return None
    if "momentum" not in t.columns:
        return 0.0
    beta = t.values("momentum")
    return float(beta[0]) if len(beta) == 1 else None


def _plain_sgd(axis: str, value: Any) -> bool:
    """Whether an axis is one of those added later (LATER_DEFAULTS), at its default: the plain
    SGD of every figure, left unsaid."""
    if axis not in LATER_DEFAULTS:
        return False
    if axis == "average_from":
        return str(value) == average_text(None)
    if axis == "drop_last":
        return str(value).lower() == "false"
    return float(value) == LATER_DEFAULTS[axis]


# --- heatmaps ----------------------------------------------------------------------------------------


def lr_epoch_heatmap(
    data: Any,
    *,
    value: str = "w_err_norm",
    ax: plt.Axes | None = None,
    norm: LogNorm | None = None,
    cells: pd.DataFrame | None = None,
) -> plt.Axes:
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
    sns.heatmap(
        median,
        annot=annot,
        fmt="",
        norm=norm,
        cmap="viridis",
        ax=ax,
        annot_kws={"fontsize": 7},
        cbar_kws={"label": f"median {LABELS.get(value, value)}"},
        linewidths=0.5,
        linecolor="white",
    )
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


def heatmap_facets(
    data: Any, *, value: str = "w_err_norm", col: str | None = None, row: str | None = None, title: str | None = None
) -> plt.Figure:
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
    parts = {(i, j): cells[_match(cells, {row: r, col: c})] for i, r in enumerate(rows) for j, c in enumerate(cols)}
    norm = _log_norm([cells[["median"]]])
    for ax in grid.flat[len(parts) :]:  # the wrapped grid's unused places
        ax.set_axis_off()
    for (i, j), part in parts.items():
        ax = grid.flat[i * len(cols) + j]
        if part.empty:
            ax.set_axis_off()
            continue
        lr_epoch_heatmap(
            t.select({k: [v] for k, v in ((row, rows[i]), (col, cols[j])) if k}),
            value=value,
            ax=ax,
            norm=norm,
            cells=part,
        )
        ax.set_title(", ".join(f"{k} = {format_value(v)}" for k, v in ((row, rows[i]), (col, cols[j])) if k))
    heading = "\n".join(filter(None, [title, held_fixed(t, ["lr", "epoch", col, row])]))
    if heading:
        fig.suptitle(heading)
    fig.tight_layout()
    return fig


def loss_shapes(
    sigmas: Sequence[float], *, axes: Sequence[plt.Axes] | None = None, span: float = 4.0
) -> Sequence[plt.Axes]:
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
_METADATA = {
    ".png": {"Software": None},
    ".svg": {"Date": None, "Creator": None},
    ".pdf": {"CreationDate": None, "Creator": None, "Producer": None},
}


def save_figure(fig: plt.Figure, path: str | Path, *, formats: Sequence[str] | None = None) -> list[Path]:
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


# --- the nested-loop plot (Rücker & Schwarzer 2014) ----------------------------------------------

#: The default order of a nested-loop plot's factors, outermost first: the axes that choose the
#: data, then those of the training, each in the vocabulary's order. With the data outermost,
#: least squares (which changes with the data alone) is flat over each inner block, and the inner
#: steps compare runs on the same data streams (paired by common random numbers).
NESTED_ORDER = (*DATA_AXES, *(a for a in AXES if a not in DATA_AXES))
#: Heights in inches: the data's panel, and one factor's strip beneath it.
_NESTED_PANEL, _NESTED_STRIP, _NESTED_GAP = 3.6, 0.42, 0.1


def nested_loop(
    data: Any,
    *,
    y: str = "w_err_norm",
    order: str | Sequence[str] | None = None,
    epoch: int | None = None,
    band: str = "ci",
    ci: float = 0.95,
    floor: str | None = "auto",
    ax: plt.Axes | None = None,
    title: str | None = None,
) -> plt.Figure:
    """Every cell of a many-factor design on one x axis, in the nested order of its factors:
    the nested-loop plot of Rücker & Schwarzer (2014, BMC Medical Research Methodology 14:129).

    The median |y| of each cell's runs is a step line on a log axis, with its band; beneath it,
    one strip per factor draws that factor's level in each cell as a step line, the first
    factor outermost (it changes slowest), each factor's levels low to high in the table's order.
    Thin vertical lines mark where the outermost factor changes. Nothing is pooled: every axis
    that varies must be in ``order``.

    Parameters
    ----------
    data : DataFrame, path or study.analysis.Table
        Tidy results; the cells' statistics are computed by the analysis engine, out of core.
    y : str, default="w_err_norm"
        The measured column, drawn as a magnitude.
    order : list of str or str, optional
        The factors, outermost first (a string: names separated by commas). Each must be an axis
        that varies in the table; every axis that varies at the checkpoint shown (on which y
        depends) must be among them, else PoolingError. ``epoch`` may be one: then every
        checkpoint is a level (epoch 0, the start, included). Default: the axes that vary,
        in :data:`NESTED_ORDER` (the data's axes first, then lr, loss, sigma, reduction).
    epoch : int, optional
        The checkpoint shown, unless epoch is in ``order``; default: each run's last.
    band, ci : as :func:`error_curve`.
    floor : str or None, default="auto"
        A least-squares column drawn as a grey step line; "auto": the twin of y
        (``ols_w_err_norm`` for ``w_err_norm``), where the table has it; None: none.
    ax : Axes, optional
        The data's panel; the strips hang beneath it (inset Axes, ``ax.child_axes``). Default:
        a new figure sized to the number of cells.
    title : str, optional
        In place of the title the figure makes; the line saying what it holds fixed stays.

    Returns
    -------
    Figure
        Its first Axes holds the data; the strips are that Axes' ``child_axes``, each labelled
        with its factor, whose step line (gid "levels") holds the level's index in each cell.

    Examples
    --------
    >>> fig = nested_loop("results/raw/ex2_huber.parquet", order="num_train,noise_kind,loss,sigma")  # doctest: +SKIP
    >>> save_figure(fig, "figures/ex2_nested.png")  # doctest: +SKIP
    """
    where = "parameter of nested_loop"
    if band not in BANDS:
        raise ParameterError("band", where, f"one of {list(BANDS)}", band)
    t = open_table(data)
    check_roles(t, where=where, y=y)
    factors = _nested_factors(t, order, epoch, where)
    rows, epoch_text = at_epoch(t, epoch, placed=factors or (), where=where)
    if factors is None:
        factors = [a for a in NESTED_ORDER if a != "epoch" and a in rows.varying([], axes_of(y))]
    pooled = rows.varying(factors, axes_of(y))
    if pooled:
        refused = PoolingError(pooled, "nested_loop")
        refused.args = (
            f"nested_loop would pool over {describe_axes(pooled)}; add them to order (every axis that "
            f"varies is a factor of the plot) or select one value of each.",
        )
        raise refused
    if not factors:
        raise ParameterError(
            "order",
            where,
            "axes that vary in the table (a nested-loop plot needs one; the table varies in none)",
            order,
        )
    twin = FLOORS.get(y) if floor == "auto" else floor
    if floor not in ("auto", None) and floor not in LEAST_SQUARES:
        raise ParameterError(
            "floor", where, f"'auto', None or a least-squares column ({', '.join(FLOORS.values())})", floor
        )
    least_squares = y in LEAST_SQUARES
    ranks = (lambda n: median_ranks(n, ci)) if band != "spread" else None
    levels = {a: rows.values(a) for a in factors}
    points, counts = rows.point_stats(factors, y, diverged=not least_squares, per_stream=least_squares, ranks=ranks)
    points, index = _in_nested_order(points, levels)
    grey = None
    if twin is not None and twin in rows.columns and not least_squares:
        grey, _ = _in_nested_order(rows.point_stats(factors, twin, diverged=False, per_stream=True)[0], levels)
    heading = "\n".join(
        filter(
            None,
            [
                title if title is not None else f"{LABELS.get(y, y)} in every cell, in nested order; {epoch_text}",
                held_fixed(rows, factors),
            ],
        )
    )
    return _draw_nested(
        points,
        index,
        levels,
        grey=grey,
        counts=counts,
        y=y,
        band=band,
        ci=ci,
        ax=ax,
        heading=heading,
        runs="data sets" if least_squares else "runs",
    )


def _nested_factors(t: Table, order: Any, epoch: int | None, where: str) -> list[str] | None:
    """``order`` as a list of axes, each one that varies in the table (epoch, the checkpoints,
    unless ``epoch`` picks one), each once; None for the default."""
    if order is None:
        return None
    names = [s.strip() for s in order.split(",")] if isinstance(order, str) else order
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ParameterError("order", where, "a list of axes (or their names separated by commas)", order)
    varying = [a for a in t.varying([], AXES) if not (a == "epoch" and epoch is not None)]
    allowed = f"axes that vary in the table ({', '.join(varying) or 'none'}), each once, outermost first"
    for i, name in enumerate(names):
        if name not in varying or name in names[:i]:
            raise ParameterError("order", where, allowed, name)
    return list(names)


def _in_nested_order(points: pd.DataFrame, levels: dict[str, list]) -> tuple[pd.DataFrame, np.ndarray]:
    """The cells sorted lexicographically by their levels' positions (the first factor
    slowest), and those positions: (cells, factors)."""
    index = np.full((len(points), len(levels)), -1, dtype=int)
    for j, (factor, values) in enumerate(levels.items()):
        for i, value in enumerate(values):
            index[_match(points, {factor: value}), j] = i
    nested = np.lexsort(index.T[::-1]) if len(levels) else np.arange(len(points))
    return points.iloc[nested].reset_index(drop=True), index[nested]


def _steps(values: Any) -> np.ndarray:
    """One value per cell, for a steps-post line over the cells' edges (the last one repeated)."""
    values = np.asarray(values, dtype=float)
    return np.append(values, values[-1:])


def _draw_nested(
    points: pd.DataFrame,
    index: np.ndarray,
    levels: dict[str, list],
    *,
    grey: pd.DataFrame | None,
    counts: dict[str, int],
    y: str,
    band: str,
    ci: float,
    ax: plt.Axes | None,
    heading: str,
    runs: str,
) -> plt.Figure:
    n, factors = len(points), list(levels)
    fig: Figure | SubFigure  # ax.figure: a given Axes may lie in a SubFigure
    made = ax is None
    if made:
        width = float(np.clip(3.0 + 0.11 * n, 7.5, 18.0))
        below = _NESTED_GAP + _NESTED_STRIP * len(factors) + 0.45  # the strips, and the x label under them
        height = 0.25 + _NESTED_PANEL + below
        fig = plt.figure(figsize=(width, height))
        ax = fig.add_axes((1.3 / width, below / height, 1 - 1.3 / width - 0.2 / width, _NESTED_PANEL / height))
    assert ax is not None  # given, or made just above
    fig = ax.figure
    edges = np.arange(n + 1) - 0.5  # cell i spans [i - 1/2, i + 1/2]
    colour = sns.color_palette(PALETTE, 1)[0]
    shown = points["kept"].to_numpy() > 0
    for (low, high, alpha), words in zip(_BAND_FILL[band], _band_legend(band, ci)):
        # each cell's band spans its width: two points a cell (fill_between's step="post" would
        # give the last cell before a cell without runs no width)
        ax.fill_between(
            np.repeat(edges, 2)[1:-1],
            np.repeat(points[low].to_numpy(dtype=float), 2),
            np.repeat(points[high].to_numpy(dtype=float), 2),
            color=colour,
            alpha=alpha,
            linewidth=0,
            label=words,
        )
    ax.plot(
        edges,
        _steps(points["median"]),
        drawstyle="steps-post",
        color=colour,
        linewidth=1.6,
        label="median per cell",
        gid="median",
    )
    if grey is not None:
        ax.plot(
            edges,
            _steps(grey["median"]),
            drawstyle="steps-post",
            color="0.45",
            linewidth=1.1,
            label="least squares on the same data (median per cell)",
            gid="floor",
        )
    ax.set_yscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylabel(LABELS.get(y, y))
    ax.tick_params(axis="x", bottom=False, labelbottom=False)
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top * (top / bottom) ** 0.1)  # room at the top for the marks of cells that lost runs
    _mark_lost(ax, points, shown)
    outer = edges[1:-1][np.diff(index[:, 0]) != 0]  # where the outermost factor changes
    for x in outer:
        ax.axvline(x, color="0.75", linewidth=0.7, zorder=0)
    _draw_strips(ax, index, levels, outer)
    # A figure of its own has room on the right for the legend and the note; a given Axes keeps
    # them inside, as error_curve does.
    _legend(ax, "outside" if made else "best", None)
    per_cell = points["total"]
    count = f"{per_cell.min()}" if per_cell.min() == per_cell.max() else f"{per_cell.min()}–{per_cell.max()}"
    missing = (
        f"no interval where under {_fewest(ci)}" if band != "spread" and points.loc[shown, "ci_lo"].isna().any() else ""
    )
    note = "\n".join(
        filter(None, [f"{_band_words(band, ci)} of {count} {runs} per cell", missing, _left_out_text(counts, None)])
    )
    if made:
        ax.text(1.01, 0.0, note, transform=ax.transAxes, ha="left", va="bottom", fontsize="x-small", color="0.3")
    else:
        ax.text(
            0.99,
            0.01,
            note,
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize="x-small",
            color="0.3",
            bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1},
        )
    if made:
        fig.suptitle(heading, x=0.5, y=1.0, va="bottom")
    else:
        ax.set_title(heading, fontsize="medium")
    assert isinstance(fig, Figure)  # _draw_strips above stops on an Axes in a SubFigure
    return fig


def _mark_lost(ax: plt.Axes, points: pd.DataFrame, shown: np.ndarray) -> None:
    """Marks at the top of the panel: ✕ over a cell none of whose runs is shown, ▽ over one
    that lost some (their median is that of the rest)."""
    top = ax.get_xaxis_transform()  # x in data, y in the Axes' fraction
    cells = np.arange(len(points))
    lost = (points["kept"] < points["total"]).to_numpy()
    for mask, marker, size, label in (
        (~shown, "x", 6, "no run of the cell shown (diverged)"),
        (lost & shown, "v", 4, "some runs of the cell left out"),
    ):
        if mask.any():
            ax.plot(
                cells[mask],
                np.full(mask.sum(), 0.965),
                linestyle="",
                marker=marker,
                markersize=size,
                color="0.2",
                transform=top,
                label=label,
                clip_on=False,
            )


def _draw_strips(ax: plt.Axes, index: np.ndarray, levels: dict[str, list], outer: np.ndarray) -> None:
    """One strip per factor beneath the panel: its level in each cell as a step line, its name
    on the left, its levels (low to high) on the right, and a level's value over its step where
    the step is wide enough to hold it."""
    # Not handled: an Axes in a SubFigure (which has no get_figheight) stops here, as it did
    # before this check (there as an AttributeError).
    assert isinstance(ax.figure, Figure)
    panel = ax.get_position().height * ax.figure.get_figheight()  # inches
    height, gap = _NESTED_STRIP / panel, _NESTED_GAP / panel
    inches_per_cell = ax.get_position().width * ax.figure.get_figwidth() / max(len(index), 1)
    edges = np.arange(len(index) + 1) - 0.5
    for j, (factor, values) in enumerate(levels.items()):
        strip = ax.inset_axes((0, -gap - (j + 1) * height, 1, height * 0.92), sharex=ax)
        level = index[:, j]
        strip.plot(edges, _steps(level), drawstyle="steps-post", color="0.15", linewidth=1.1, gid="levels")
        m = len(values)
        strip.set_ylim(-0.6, max(m - 1, 1) + 0.6)
        strip.set_yticks([])
        strip.tick_params(axis="x", bottom=False, labelbottom=False)
        for side in ("top", "right"):
            strip.spines[side].set_visible(False)
        for x in outer:
            strip.axvline(x, color="0.75", linewidth=0.7, zorder=0)
        strip.set_ylabel(factor, rotation=0, ha="right", va="center", fontsize="small", labelpad=6)
        strip.text(
            1.01,
            0.5,
            ", ".join(format_value(v) for v in values),
            transform=strip.transAxes,
            ha="left",
            va="center",
            fontsize="x-small",
            color="0.3",
        )
        starts = np.flatnonzero(np.r_[True, np.diff(level) != 0])
        ends = np.r_[starts[1:], len(level)]
        for start, end in zip(starts, ends):
            text = format_value(values[level[start]])
            if (end - start) * inches_per_cell < 0.07 * len(text) + 0.12:
                continue
            upper = level[start] > (m - 1) / 2
            strip.annotate(
                text,
                ((start + end - 1) / 2, level[start]),
                xytext=(0, -2 if upper else 2),
                textcoords="offset points",
                ha="center",
                va="top" if upper else "bottom",
                fontsize="x-small",
                color="0.25",
            )
    if len(levels):
        strip.set_xlabel(
            f"the {len(index)} cells, in nested order: {' ▸ '.join(levels)} (outermost first)", fontsize="small"
        )


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
    """One named figure of any results table (:data:`GENERIC_FIGURES`); an exercise's own figures
    are :func:`study.exercises.exercise_figure`'s.

    A generic figure sets x (``error-vs-num_train`` ...) and puts the axes that vary, and that
    the caller did not place, on hue, then col, then row, saying so in the title; more than
    that is refused (PoolingError) rather than pooled. ``nested-loop`` draws every cell on one
    axis (:func:`nested_loop`), its factors in ``order`` (outermost first; default: every axis
    that varies); it alone takes ``order``, and it takes no hue, style, col or row.
    """
    where = "parameter of draw_figure"
    if name not in GENERIC_FIGURES:
        raise ParameterError("figure", where, f"one of {list(GENERIC_FIGURES)}", name)
    t = open_table(df)
    if y not in t.columns:
        raise ParameterError("y", where, "a column of the table", y)
    roles = {"hue": hue, "style": style, "col": col, "row": row}
    if order is not None and name != "nested-loop":
        raise ParameterError("order", where, f"left out with the figure {name} (only nested-loop takes it)", order)
    if name == "nested-loop":
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
