"""Paired comparisons: runs that share a data stream (common random numbers) compared level
against baseline, with a bootstrap over streams. Nothing here imports torch."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import ParameterError, PoolingError
from .selection import at_epoch, column_list, default_by, matching_value, read_as
from .summaries import median_ranks
from .vocabulary import AXES, DATA_AXES
from .words import values_text

__all__ = ["compare"]

#: The blocks of data streams a comparison's bootstrap resamples (a hash of the seed): streams
#: themselves where a cell has fewer, and a cell of millions is resampled in milliseconds.
BOOTSTRAP_BLOCKS = 200


#: What a comparison's metric may be: SGD's errors (least squares does not depend on the factor).
_COMPARED = re.compile(r"w_err_norm|w_err_\d+|b_err|gap_w_norm|val_mse")


def compare(
    table: Any,
    *,
    factor: str,
    baseline: Any,
    metric: str = "w_err_norm",
    by: str | Sequence[str] | None = None,
    epoch: int | None = None,
    ci: float = 0.95,
    paired: bool | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Each level of ``factor`` against ``baseline``, cell by cell, paired by data stream.

    Runs that differ only in lr, loss, sigma or reduction share their data (common random
    numbers), so each stream gives a pair: the error of the level's run and of the baseline's.
    Per cell (``by``) and level, the paired ratios error / baseline's error are described by
    their median, ``ratio``, with a distribution-free interval from order statistics
    (``ratio_lo``, ``ratio_hi``); the ratio of root mean squared errors, ``rmse_ratio``, with a
    bootstrap interval over data streams (resampled in BOOTSTRAP_BLOCKS blocks of streams, from
    their sums); and ``wins``, the share of streams on which the level's error is smaller (ties
    count a half). A run that diverged has an infinite error: it loses, never dropped.

    A factor that changes the data (num_train, noise, noise_kind, batch_size) cannot be
    paired: its levels are compared unpaired (``paired`` False in the output and in
    ``attrs``): the ratio of the medians, with the interval made of the two medians' intervals
    (each at level √ci, so that both hold with probability ci at least), and the ratio of RMSEs
    with a bootstrap resampling each level's streams apart; ``wins`` is then NaN.

    Parameters
    ----------
    table : DataFrame, str or Path
    factor : str
        The axis whose levels are compared, e.g. "loss".
    baseline : value of ``factor``
        The level the others are compared with, e.g. "squared".
    metric : str, default="w_err_norm"
        SGD's error compared, as a magnitude: w_err_norm, w_err_j, b_err, gap_w_norm or val_mse.
    by : str or list of str, optional
        The cells; default: every other axis that varies. Nothing is pooled: an axis that varies
        in a cell is refused (PoolingError).
    epoch : int, optional
        The checkpoint compared (default: each run's last).
    ci : float, default=0.95
    paired : bool, optional
        Default: paired unless the factor changes the data. False forces the unpaired
        comparison (to see what pairing gains).
    n_boot, seed : the bootstrap's resamples and seed.

    Returns
    -------
    DataFrame
        One row per cell and level other than the baseline: the cell's columns, the level in
        the factor's own column, ``baseline``, ``paired``, ``streams`` (pairs, or the level's
        runs unpaired), ``ratio``, ``ratio_lo``, ``ratio_hi``, ``rmse_ratio``, ``rmse_ratio_lo``,
        ``rmse_ratio_hi``, ``wins``. ``attrs`` says the epoch, the metric and whether paired.
    """
    from .analysis import open_table

    where = "parameter of compare"
    t = open_table(table)
    axes = [a for a in AXES if a in t.columns]
    if factor not in axes:
        raise ParameterError("factor", where, f"one of the table's axes ({', '.join(axes)})", factor)
    levels = t.values(factor)
    if len(levels) < 2:
        raise ParameterError(
            "factor",
            where,
            f"an axis that takes two values or more in the table ({factor} takes {values_text(levels)})",
            factor,
        )
    base = matching_value(levels, read_as(t.numeric(factor), str(baseline)) if isinstance(baseline, str) else baseline)
    if base is None:
        raise ParameterError("baseline", where, f"one of the values {factor} takes ({values_text(levels)})", baseline)
    if not isinstance(metric, str) or not _COMPARED.fullmatch(metric) or metric not in t.columns:
        raise ParameterError(
            "metric",
            where,
            "one of SGD's errors in the table (w_err_norm, w_err_0, b_err, gap_w_norm, val_mse)",
            metric,
        )
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < ci < 1:
        raise ParameterError("ci", where, "a level between 0 and 1, e.g. 0.95", ci)
    changes_data = factor in DATA_AXES
    if paired and changes_data:
        raise ParameterError(
            "paired", where, f"False for {factor}: it changes the data, so no two of its levels share a stream", paired
        )
    paired = not changes_data if paired is None else bool(paired)
    by = [a for a in default_by(t) if a not in (factor, "epoch")] if by is None else column_list(by, "by", where)
    if factor in by:
        raise ParameterError(
            "by", where, f"columns other than the factor ({factor}: its levels are what is compared)", by
        )
    rows, epoch_text = at_epoch(t, epoch, placed=[*by, factor], where=where)
    pooled = rows.varying([*by, factor])
    if pooled:
        raise PoolingError(pooled, "compare")
    keys = list(by) if "epoch" in by else [*by, "epoch"]
    level = np.sqrt(ci) if not paired else ci
    stats, sums = rows.comparison(
        keys, factor, base, metric, lambda n: median_ranks(n, level), paired=paired, blocks=BOOTSTRAP_BLOCKS
    )
    stats = rows._sorted(stats.rename(columns={"level": factor}), [*keys, factor])
    sums = sums.rename(columns={"level": factor})
    rng = np.random.default_rng(seed)
    # Each (cell, level)'s rows, looked up by their values: both frames come from the same
    # table's columns, so a level or cell has the same value in each.
    by_group = dict(iter(sums.groupby([*keys, factor], observed=True, sort=False)))
    by_cell = {tuple(cell[k] for k in (*keys, factor)): cell for cell in stats.to_dict("records")}
    empty = sums.iloc[:0]
    out = []
    for cell in stats.to_dict("records"):
        value = cell[factor]
        if _same_value(value, base):
            continue
        at = {k: cell[k] for k in keys}
        level = tuple(at.values())
        mine = by_group.get((*level, value), empty)
        row = {**at, factor: value, "baseline": base, "paired": paired}
        if paired:
            rmse = _bootstrap_ratio(mine["sv"].to_numpy(), mine["sb"].to_numpy(), None, None, n_boot, ci, rng)
            row.update(
                streams=int(cell["n"]),
                ratio=cell["med0"],
                ratio_lo=cell["lo0"],
                ratio_hi=cell["hi0"],
                wins=cell["wins"],
            )
        else:
            baseline = next((v for c, v in by_cell.items() if c[:-1] == level and _same_value(c[-1], base)), None)
            other = baseline or {"med0": np.nan, "lo0": np.nan, "hi0": np.nan}  # a cell whose baseline has no runs
            theirs = next((g for c, g in by_group.items() if c[:-1] == level and _same_value(c[-1], base)), empty)
            with np.errstate(divide="ignore", invalid="ignore"):
                row.update(
                    streams=int(cell["n"]),
                    ratio=cell["med0"] / other["med0"],
                    ratio_lo=cell["lo0"] / other["hi0"],
                    ratio_hi=cell["hi0"] / other["lo0"],
                    wins=np.nan,
                )
            rmse = _bootstrap_ratio(
                mine["sv"].to_numpy(),
                theirs["sv"].to_numpy(),
                mine["k"].to_numpy(),
                theirs["k"].to_numpy(),
                n_boot,
                ci,
                rng,
            )
        row.update(rmse_ratio=rmse[0], rmse_ratio_lo=rmse[1], rmse_ratio_hi=rmse[2])
        out.append(row)
    columns = [
        *keys,
        factor,
        "baseline",
        "paired",
        "streams",
        "ratio",
        "ratio_lo",
        "ratio_hi",
        "rmse_ratio",
        "rmse_ratio_lo",
        "rmse_ratio_hi",
        "wins",
    ]
    result = t.categorize(pd.DataFrame(out, columns=columns))
    result.attrs = {
        "epoch": epoch_text,
        "metric": metric,
        "paired": paired,
        "factor": factor,
        "baseline": base,
        "ci": ci,
    }
    return result


def _same_value(a: Any, b: Any) -> bool:
    """Whether two values of an axis are the same: numbers to 1e-9 relative (as --where reads
    them), anything else as text."""
    numbers = (int, float, np.integer, np.floating)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return str(a) == str(b)


def _bootstrap_ratio(
    top: np.ndarray,
    bottom: np.ndarray,
    top_n: np.ndarray | None,
    bottom_n: np.ndarray | None,
    n_boot: int,
    ci: float,
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    """√(Σtop/Σbottom) (paired: the blocks of both are the same streams), or unpaired
    √((Σtop/Σtop_n)/(Σbottom/Σbottom_n)) with each side's blocks resampled apart; with its
    bootstrap interval at level ``ci`` (order statistics of the resamples)."""
    if not len(top) or not len(bottom):
        return np.nan, np.nan, np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        if top_n is None:
            pick = rng.integers(0, len(top), (n_boot, len(top)))
            whole = np.sqrt(top.sum() / bottom.sum())
            boot = np.sqrt(top[pick].sum(1) / bottom[pick].sum(1))
        else:
            assert bottom_n is not None  # unpaired: both sides' counts are given, or neither
            a, b = rng.integers(0, len(top), (n_boot, len(top))), rng.integers(0, len(bottom), (n_boot, len(bottom)))
            whole = np.sqrt((top.sum() / top_n.sum()) / (bottom.sum() / bottom_n.sum()))
            boot = np.sqrt((top[a].sum(1) / top_n[a].sum(1)) / (bottom[b].sum(1) / bottom_n[b].sum(1)))
    boot = np.where(np.isnan(boot), np.inf, boot)
    low, high = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")
    return float(whole), float(low), float(high)
