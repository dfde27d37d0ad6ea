"""What the studies share: their outcome, and numbers with their precision (an estimate and its
interval over independent data streams), in the words the answers use."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..analysis import Table, quote
from ..comparisons import compare
from ..errors import ParameterError, PoolingError
from ..selection import LEAST_SQUARES
from ..summaries import fewest_runs, median_ranks, precision_shortfall
from ..vocabulary import RUN_AXES
from ..words import values_text


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
                "parameter of exercise_figure",
                f"a figure the table can draw ({figure} needs {axis} = {values_text(list(values))}; "
                f"the table has {axis} = {values_text(have)})",
                figure,
            )


def _noise_var(t: Table) -> float | None:
    """σ² where the table's noise is one Gaussian level, else None (theory's quantiles need it)."""
    if t.values("noise_kind") != ["gaussian"] or len(t.values("noise")) != 1:
        return None
    return float(theory.noise_variance(float(_one(t, "noise")), "gaussian"))


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
