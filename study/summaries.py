"""Per-cell summaries of a results table, with their Monte Carlo precision.

:func:`summarize` gives count, mean, median and quantiles of the errors per grid cell, and with
``ci=`` the precision of each: ``{metric}_mcse`` for mean-type statistics, the median's interval
from order statistics. The independent units are data streams. Nothing here imports torch."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import ParameterError
from .selection import LEAST_SQUARES, at_epoch, column_list, default_by
from .vocabulary import AXES, RUN_AXES
from .words import describe_axes

__all__ = ["summarize", "diverged_runs"]

#: The error measures a summary describes, each a magnitude (absolute errors for b).
ERROR_METRICS = ("w_err_norm", "b_err_abs", "ols_w_err_norm", "ols_b_err_abs", "gap_w_norm", "val_mse")


_STATS = ("mean", "median", "q10", "q90")


def summarize(
    table: Any,
    *,
    by: str | Sequence[str] | None = None,
    stats: Sequence[str] = tuple(_STATS),
    epoch: int | None = None,
    ci: float | None = None,
) -> pd.DataFrame:
    """Per cell: the count of runs, how many diverged, and statistics of each error.

    SGD's errors (``w_err_norm``, ``b_err_abs``, ``gap_w_norm``, ``val_mse``) are described over
    the runs of the cell that did not diverge (``diverged`` counts the others). Least squares
    (``ols_w_err_norm``, ``ols_b_err_abs``) never diverges and depends on the data alone: it is
    described over every run, one value per data stream (runs that differ only in lr, loss,
    sigma or reduction share their data, so each data set counts once).

    The statistics are exact (order statistics as numpy's, means as compensated sums) and
    computed out of core (study.analysis): a path is read a column and row group at a time,
    never whole, whatever its size.

    Parameters
    ----------
    table : DataFrame, str or Path
        A results table (one row per run per checkpoint): a DataFrame, or a .parquet or .csv file.
    by : str or list of str, optional
        The column(s) that define a cell; default: the axes that vary, and ``epoch``.
    stats : sequence of {"mean", "median", "q10", "q90"}
    epoch : int, optional
        The checkpoint to describe. Default: every checkpoint when ``epoch`` is in ``by``, else
        each run's last checkpoint.
    ci : float, optional
        With a level (0.95), each number also gets its Monte Carlo precision (see
        :func:`precision_columns`): the performance measures of Morris, White & Crowther (2019)
        for each ŵ_j, b̂ and ‖ŵ − w‖, with their Monte Carlo standard errors, and intervals of
        that level for the medians. The independent units are the data streams.

    Returns
    -------
    DataFrame
        One row per cell: the ``by`` columns, ``epoch`` (the checkpoint shown, where ``by``
        lacks it), ``count`` (runs), ``diverged``, ``streams`` (distinct data sets),
        ``pooled_over`` (only where an axis varies within a cell: the axes and their values),
        then ``<metric>_<stat>`` for each metric of ERROR_METRICS; with ``ci``, the columns of
        :func:`precision_columns` after them. ``attrs["epoch"]`` says in words which
        checkpoint is shown, ``attrs["pooled"]`` maps each pooled axis to its values.

    Examples
    --------
    >>> from study import Grid, run_grid
    >>> df = run_grid(Grid(num_train=[20], loss=["squared", "huber"], epoch=[1, 3]), progress=False)
    >>> s = summarize(df, by="loss")  # each run's last checkpoint
    >>> s[["loss", "epoch", "count"]].to_dict("records")
    [{'loss': 'squared', 'epoch': 3, 'count': 1}, {'loss': 'huber', 'epoch': 3, 'count': 1}]
    """
    from .analysis import open_table

    where = "parameter of summarize"
    t = open_table(table)
    by = default_by(t) if by is None else column_list(by, "by", where)
    unknown = [c for c in by if c not in t.columns]
    if unknown:
        axes = [a for a in AXES if a in t.columns]
        raise ParameterError(
            "by",
            where,
            f"columns of the table (its axes: {', '.join(axes)})",
            unknown[0] if len(unknown) == 1 else unknown,
        )
    bad = [s for s in stats if s not in _STATS]
    if bad:
        raise ParameterError("stats", where, f"among {list(_STATS)}", bad)
    if ci is not None and (isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < ci < 1):
        raise ParameterError("ci", where, "a level between 0 and 1, e.g. 0.95", ci)
    rows, epoch_text = at_epoch(t, epoch, placed=by, where=where)
    pooled = rows.varying(by)
    # epoch joins the keys where it is one value per cell: it names the checkpoint shown, and
    # splits no cell.
    keys = by if "epoch" in by or "epoch" in pooled else [*by, "epoch"]
    sgd = [m for m in ERROR_METRICS if m not in LEAST_SQUARES]
    ols = [m for m in ERROR_METRICS if m in LEAST_SQUARES]
    cells = rows.cell_stats(keys, sgd, ols, stats)
    out = cells[[*keys, "count", "diverged", "streams"]].copy()
    if pooled:
        out["pooled_over"] = describe_axes(pooled)
    for metric in ERROR_METRICS:
        for stat in stats:
            out[f"{metric}_{stat}"] = cells[f"{metric}_{stat}"]
    if ci is not None:
        estimands = [
            *sorted((c for c in t.columns if re.fullmatch(r"w_err_\d+", c)), key=lambda c: int(c[6:])),
            "b_err",
            "w_err_norm",
        ]
        # A cell that pools no axis holds one run of each stream: its units are its runs that did
        # not diverge, as many as the cells' statistics just counted (the ranks of the medians'
        # intervals are then known before the query that finds them).
        survivors = set((cells["count"] - cells["diverged"]).astype(int))
        expected = survivors.pop() if not pooled and len(survivors) == 1 else None
        moments = rows.unit_moments(
            keys, estimands, PAIRED, lambda n: median_ranks(n, ci), per_stream=bool(pooled), units=expected
        )
        precision = precision_columns(moments, estimands).set_index(keys)
        at = precision.reindex(
            pd.MultiIndex.from_frame(out[keys].astype(object))
            if len(keys) > 1
            else pd.Index(out[keys[0]].astype(object))
        )
        for column in precision.columns:
            out[column] = at[column].to_numpy()
        out["units"] = out["units"].fillna(0).astype(np.int64)
    out.attrs = {"epoch": epoch_text, "pooled": pooled, "by": list(by), "ci": ci}
    return out


#: The median columns of summarize that a target precision may be set on, by metric.
_MEDIAN_OF = {"w_err_norm": "w_err_norm_median", "b_err": "b_err_abs_median"}


def precision_shortfall(
    table: Any, *, metric: str = "w_err_norm", target: float, ci: float = 0.95, replicates: int | None = None
) -> pd.DataFrame:
    """How far each cell (every axis that varies, at each run's last checkpoint) is from a
    target precision of the median of ``metric``: its ``ci`` interval's half-width relative to
    the median, ``relative`` = max(hi − median, median − lo) / median (inf where the cell has
    too few runs for an interval), and ``replicates_needed``, the replicates that would bring
    it to ``target``, since an interval narrows as 1/√n: ⌈replicates · (relative / target)²⌉
    (twice the replicates where there is no interval yet). ``replicates``: the grid's now
    (default: the cell's units).

    A cell where most runs diverged (``diverging`` True) has no finite median error to make
    precise, and more replicates do not give it one: its ``relative`` is NaN and it needs no
    replicates (the caller says how many such cells there are)."""
    from .analysis import open_table

    median = _MEDIAN_OF.get(metric, f"{metric}_abs_median")
    t = open_table(table)
    by = [a for a in default_by(t) if a != "epoch"] or ["num_train"]
    s = summarize(t, by=by, ci=ci)
    if median not in s or f"{median}_lo" not in s:
        raise ParameterError("metric", "parameter of precision_shortfall", "w_err_norm, b_err or w_err_J", metric)
    m, lo, hi = (s[c].to_numpy(dtype=float) for c in (median, f"{median}_lo", f"{median}_hi"))
    diverging = s["diverged"].to_numpy() * 2 > s["count"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(np.isfinite(lo) & np.isfinite(hi) & (m > 0), np.maximum(hi - m, m - lo) / m, np.inf)
        relative = np.where(diverging, np.nan, relative)
        now = np.full(len(s), replicates, dtype=float) if replicates is not None else s["units"].to_numpy(dtype=float)
        needed = np.where(np.isfinite(relative), np.ceil(now * (relative / target) ** 2), 2 * np.maximum(now, 3))
    needed = np.where(diverging, 0, needed)
    return s[[*by, "epoch", "units"]].assign(
        median=m, relative=relative, diverging=diverging, replicates_needed=needed.astype(np.int64)
    )


def median_ranks(n: int, level: float = 0.95) -> tuple[int, int] | None:
    """The 1-based ranks (l, u) of the order statistics X_(l) <= X_(u) that cover the median of
    any continuous distribution with probability at least ``level``, from n independent draws:
    l is the largest rank with P(B <= l - 1) <= (1 - level)/2 for B ~ Binomial(n, 1/2), and
    u = n + 1 - l. None where n is too small for any (n < 6 at 95%).

    Examples
    --------
    >>> median_ranks(100)  # P(40 <= B <= 60) = 0.965
    (40, 61)
    """
    k = np.arange(n // 2 + 1)
    log_pmf = n * np.log(0.5) + np.concatenate([[0.0], np.cumsum(np.log(n - k[:-1]) - np.log(k[:-1] + 1))])
    below = np.flatnonzero(np.cumsum(np.exp(log_pmf)) <= (1 - level) / 2)  # k with P(B <= k) <= alpha/2
    if not len(below):
        return None
    low = int(below[-1]) + 1
    return low, n + 1 - low


def fewest_runs(level: float = 0.95) -> int:
    """The fewest independent runs a median's interval at ``level`` can be had from (6 at 95%:
    see :func:`median_ranks`)."""
    n = 1
    while median_ranks(n, level) is None:
        n += 1
    return n


def precision_columns(moments: pd.DataFrame, estimands: Sequence[str]) -> pd.DataFrame:
    """Performance measures and their Monte Carlo standard errors (Morris, White & Crowther
    2019, table 6) from Table.unit_moments: per cell, over its n independent units (data
    streams), for each estimand E (``w_err_j`` = ŵ_j − w_j, ``b_err``, ``w_err_norm``):

    - ``units``: n, the streams with a run that did not diverge;
    - ``E_bias`` (for the norm, ``w_err_norm_mean``) = mean of E, its MCSE
      √(Σ(Eᵢ − Ē)²/(n(n − 1))) as ``..._mcse``;
    - ``E_empse`` = √(Σ(Eᵢ − Ē)²/(n − 1)), MCSE EmpSE/√(2(n − 1));
    - ``E_rmse`` = √MSE, MSE = mean of E², MCSE √(Σ(Eᵢ² − MSE)²/(n(n − 1)))/(2·RMSE) (the
      delta method on MSE's own);
    - ``E_releff`` for ‖ŵ − w‖ and b̂: MSE / MSE of least squares on the same data, paired by
      stream; MCSE by the delta method for a ratio of paired means;
    - the median of |E| (``w_err_norm_median``, ``b_err_abs_median``, ``w_err_j_abs_median``)
      with ``_lo`` and ``_hi``: the order statistics of :func:`median_ranks` (distribution-free).
    """
    n = moments["n"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        more = np.where(n > 1, 1.0, np.nan)  # one unit has no spread to measure

        def about_mean(total: str, squares: str) -> tuple[np.ndarray, np.ndarray]:
            """The mean and the sum of squares about it, from the sum and the sum of squares."""
            sum_, sum_sq = moments[total].to_numpy(dtype=float), moments[squares].to_numpy(dtype=float)
            return sum_ / n, np.maximum(sum_sq - sum_ * sum_ / n, 0.0)

        out = {"units": moments["n"]}
        for i, e in enumerate(estimands):
            mx, sxx = about_mean(f"sx{i}", f"sxx{i}")
            my, syy = about_mean(f"sy{i}", f"syy{i}")
            empse = np.sqrt(sxx / (n - 1)) * more
            mean = "w_err_norm_mean" if e == "w_err_norm" else f"{e}_bias"
            if e != "w_err_norm":
                out[mean] = mx
            out[f"{mean}_mcse"] = np.sqrt(sxx / (n * (n - 1))) * more
            out[f"{e}_empse"] = empse
            out[f"{e}_empse_mcse"] = empse / np.sqrt(2 * (n - 1))
            rmse = np.sqrt(my)
            out[f"{e}_rmse"] = rmse
            out[f"{e}_rmse_mcse"] = np.sqrt(syy / (n * (n - 1))) * more / (2 * rmse)
            if e in PAIRED:
                mo, soo = about_mean(f"so{i}", f"soo{i}")
                syo = moments[f"syo{i}"].to_numpy(dtype=float) - n * my * mo
                ratio = my / mo
                out[f"{e}_releff"] = ratio
                out[f"{e}_releff_mcse"] = np.sqrt((syy - 2 * ratio * syo + ratio**2 * soo) / (n - 1) / n) / mo * more
            median = _MEDIAN_OF.get(e, f"{e}_abs_median")
            if e not in ("w_err_norm", "b_err"):
                out[median] = moments[f"med{i}"].to_numpy()
            out[f"{median}_lo"] = moments[f"lo{i}"].to_numpy()
            out[f"{median}_hi"] = moments[f"hi{i}"].to_numpy()
    keys = [c for c in moments.columns if not re.fullmatch(r"(n|s(x|y|o|xx|yy|oo|yo)\d+|med\d+|lo\d+|hi\d+)", c)]
    return pd.concat([moments[keys].reset_index(drop=True), pd.DataFrame(out).reset_index(drop=True)], axis=1)


def diverged_runs(table: Any, *, epoch: int | None = None) -> pd.DataFrame:
    """The runs that diverged by the checkpoint ``epoch`` (default: by their last), one row each.

    ``table``: a DataFrame, or a .parquet or .csv file (read a few columns at a time).

    Returns
    -------
    DataFrame
        The run's cell (the grid axes but ``epoch``), ``replicate``, ``seed`` (its data: see
        SyntheticRegressionData) and ``diverged_at``, the first checkpoint at which it had
        diverged, in the grid's order.
    """
    from .analysis import open_table

    t = open_table(table)
    if epoch is not None:
        at_epoch(t, epoch, where="parameter of diverged_runs")  # refuses a checkpoint the table lacks
        t = t.filter(f"epoch <= {int(epoch)}")
    keys = [a for a in RUN_AXES if a in t.columns] + ["replicate", "seed"]
    return t.diverged_first(keys)


#: The least-squares error on the same data that a relative efficiency is taken against.
PAIRED = {"w_err_norm": "ols_w_err_norm", "b_err": "ols_b_err"}
