"""Power-law fits of an error against a size (``error ≈ c · x^slope``), with the spread of the
slope over replicates. Nothing here imports torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import PoolingError
from .selection import LEAST_SQUARES, axes_of

__all__ = ["fit_power_law", "PowerLaw"]

#: The smallest number of distinct x values a power law is fitted to: two points always lie on
#: a line, so two sizes give a slope with nothing to check it against.
MIN_FIT_LEVELS = 3


@dataclass(frozen=True)
class PowerLaw:
    """y ≈ prefactor · x^slope, with a bootstrap interval for the slope."""

    slope: float
    prefactor: float
    low: float  # 2.5% bootstrap quantile of the slope
    high: float  # 97.5%
    levels: int = 0  # distinct x values fitted
    units: int = 0  # independent units (data streams) behind the medians

    def __call__(self, x: Any) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=float) ** self.slope

    def trend(self, variable: str = "n") -> str:
        """The fit in words, its direction read from the interval, never assumed:
        "falls as n^-0.55 (95% interval [-0.61, -0.51])", "rises as ...", or "shows no clear
        trend in n (slope -0.07, 95% interval [-0.33, 0.26])"."""
        interval = f"95% interval [{self.low:.2f}, {self.high:.2f}]"
        if self.high < 0:
            return f"falls as {variable}^{self.slope:.2f} ({interval})"
        if self.low > 0:
            return f"rises as {variable}^{self.slope:.2f} ({interval})"
        return f"shows no clear trend in {variable} (slope {self.slope:.2f}, {interval})"


def fit_power_law(
    x: Any,
    y: Sequence[float] | np.ndarray | str,
    *,
    units: Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    against: str = "num_train",
    fit_from: float | None = None,
) -> PowerLaw:
    """Fit y ≈ c · x^k by least squares on the logs of the per-x medians.

    Parameters
    ----------
    x, y : sequences of positive numbers, one pair per row (several rows per x); or ``x`` a
        results table (a DataFrame, a .parquet or .csv path, a study.analysis.Table) and ``y``
        the name of one of its error columns, fitted against the column ``against`` (from
        ``fit_from`` up) with one unit per data stream: |y| of the runs that did not diverge,
        or of one row per stream for least squares. A path is never loaded whole.
    units : sequence, optional
        The independent unit of each row, e.g. its data stream (the ``seed`` column). Rows of
        one unit are one observation (their median): a run's least-squares error appears once
        for each lr it was trained with, and counting it so would narrow the interval. Default:
        every row is a unit.
    n_boot : int, default=1000
        Bootstrap resamples (units resampled within each x) for the 95% interval of k.
    seed : int, default=0
        Seeds the bootstrap, so the interval is reproducible.

    Raises
    ------
    ValueError
        Fewer than MIN_FIT_LEVELS (3) distinct x with positive y, or a unit with two x.

    Examples
    --------
    >>> x = np.repeat([10, 100, 1000], 5); fit = fit_power_law(x, 3.0 * x ** -0.5)
    >>> round(fit.slope, 6), round(fit.prefactor, 6)
    (-0.5, 3.0)
    """
    if isinstance(y, str):
        from .analysis import literal, open_table, quote

        t = open_table(x)
        pooled = t.varying([against], axes_of(y))
        if pooled:
            raise PoolingError(pooled, f"fit_power_law of {y} against {against}")
        if fit_from is not None:
            t = t.filter(f"{quote(against)} >= {literal(fit_from)}")
        part = t.stream_values([against], y, diverged=y not in LEAST_SQUARES, per_stream=y in LEAST_SQUARES)
        return fit_power_law(
            part[against], part["v"], units=part["seed"] if "seed" in part else None, n_boot=n_boot, seed=seed
        )
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    if units is not None:
        per = pd.DataFrame({"unit": np.asarray(units)[keep], "x": x, "y": y}).groupby("unit", sort=True)
        if (per["x"].nunique() > 1).any():
            raise ValueError("fit_power_law: a unit (data stream) must have one x; got a unit at several.")
        per = per.agg(x=("x", "first"), y=("y", "median"))
        x, y = per["x"].to_numpy(), per["y"].to_numpy()
    levels = np.unique(x)
    if len(levels) < MIN_FIT_LEVELS:
        raise ValueError(
            f"A power law is fitted to positive values at {MIN_FIT_LEVELS} distinct x or more; "
            f"got x levels {levels.tolist()}."
        )
    groups = [np.log(y[x == level]) for level in levels]
    lx = np.log(levels)

    centred = lx - lx.mean()

    def slopes(medians: np.ndarray) -> np.ndarray:  # (..., L) medians: least-squares slopes, one per row
        return (medians - medians.mean(-1, keepdims=True)) @ centred / (centred @ centred)

    medians = np.array([np.median(g) for g in groups])
    k = float(slopes(medians))
    logc = float(medians.mean() - k * lx.mean())
    # The bootstrap as one array computation: every resample of every level at once, (n_boot, L).
    rng = np.random.default_rng(seed)
    boot_medians = np.stack([np.median(g[rng.integers(0, len(g), size=(n_boot, len(g)))], axis=1) for g in groups], -1)
    low, high = np.quantile(slopes(boot_medians), [0.025, 0.975])
    return PowerLaw(
        slope=k, prefactor=float(np.exp(logc)), low=float(low), high=float(high), levels=len(levels), units=len(x)
    )
