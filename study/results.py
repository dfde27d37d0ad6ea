"""The tidy results table: its schema, atomic CSV + metadata writing, and summaries.

One row per run per checkpoint. Columns, in order:

- the grid coordinates: ``num_train, lr, epoch, loss, sigma, reduction, batch_size, noise,
  noise_kind``, then ``replicate`` and ``seed`` (the run's own seed: ``SyntheticRegressionData(...,
  seed=seed)`` rebuilds its data);
- ``w_hat_j`` and ``w_err_j`` = ŵ_j − w_j for each feature j (of runs of at most
  PER_FEATURE_COLUMNS_UP_TO features; missing for the others, and past a run's own d),
  ``w_err_norm`` = ‖ŵ − w‖₂, ``w_err_max`` = max_j |ŵ_j − w_j|, ``b_hat``, ``b_err`` = b̂ − b (w
  and b are the float32 values the data were generated with);
- ``train_loss`` (mean per-example training loss of the run's loss, for ``sum`` runs too),
  ``val_mse``, ``grad_w_norm`` and ``grad_b`` (full-batch gradient of ``train_loss``);
- ``ols_w_err_norm``, ``ols_b_err`` (least squares on the same training data) and
  ``gap_w_norm`` = ‖ŵ − ŵ_ols‖ (what optimisation has yet to close);
- ``steps`` (SGD updates so far) and ``diverged``: ŵ, b̂ or the training loss is no longer
  finite, or the loss has grown past DIVERGENCE_FACTOR (100) times its value at the start.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._checks import ParameterError
from .grid import AXES
from .vocabulary import PER_FEATURE_COLUMNS_UP_TO, RUN_AXES, STREAM_KEYS

if TYPE_CHECKING:  # a table is read, summarized and drawn without torch
    from .engine import ChunkResult

__all__ = [
    "SCHEMA_VERSION",
    "COORDINATES",
    "STRING_AXES",
    "ordered_categorical",
    "ERROR_METRICS",
    "write_csv",
    "write_json",
    "atomic_write",
    "summarize",
    "read_results",
    "write_table",
    "write_table_blocks",
    "metric_columns",
    "metric_names",
    "feature_columns",
    "table_metadata",
    "default_by",
    "PowerLaw",
    "fit_power_law",
    "ParameterError",
    "PoolingError",
    "LEAST_SQUARES",
    "PAIRED",
    "median_ranks",
    "fewest_runs",
    "precision_columns",
    "compare",
    "precision_shortfall",
    "BOOTSTRAP_BLOCKS",
    "DATA_AXES",
    "MIN_FIT_LEVELS",
    "axes_of",
    "at_epoch",
    "varying_axes",
    "describe_axes",
    "values_text",
    "format_value",
    "diverged_runs",
    "parse_where",
    "select",
]

#: Bumped whenever a column is added, removed or changes meaning; stored runs of another
#: version are never reused.
SCHEMA_VERSION = 1
COORDINATES = (*AXES, "replicate", "seed")
#: The error measures a summary describes, each a magnitude (absolute errors for b).
ERROR_METRICS = ("w_err_norm", "b_err_abs", "ols_w_err_norm", "ols_b_err_abs", "gap_w_norm", "val_mse")
_STATS = ("mean", "median", "q10", "q90")


def _row_norms(x: np.ndarray) -> np.ndarray:
    """The Euclidean norm of each row of (N, d) ``x``, its squares summed column by column: the
    same bits as np.linalg.norm(x, axis=1) for d <= 2 (tested), and five times faster, since
    that reduces along rows of d values one row at a time (17 ms against 3 for 91k runs of W)."""
    acc = x[:, 0] * x[:, 0]
    for j in range(1, x.shape[1]):
        acc += x[:, j] * x[:, j]
    return np.sqrt(acc)


def _row_max_abs(x: np.ndarray) -> np.ndarray:
    """The largest |x_j| of each row of (N, d) ``x``, column by column (NaN where any is)."""
    acc = np.abs(x[:, 0])
    for j in range(1, x.shape[1]):
        acc = np.maximum(acc, np.abs(x[:, j]))  # NaN stays NaN: a diverged run's max is NaN
    return acc


def metric_names(width: int) -> list[str]:
    """The measured columns of a table whose runs have at most ``width`` per-feature columns,
    in order (metric_columns's order, with every feature's columns)."""
    return (
        [f"w_hat_{j}" for j in range(width)]
        + [f"w_err_{j}" for j in range(width)]
        + [
            "w_err_norm",
            "w_err_max",
            "b_hat",
            "b_err",
            "train_loss",
            "val_mse",
            "grad_w_norm",
            "grad_b",
            "ols_w_err_norm",
            "ols_b_err",
            "gap_w_norm",
            "steps",
            "diverged",
        ]
    )


def feature_columns(num_inputs: Iterable[int]) -> int:
    """How many features have a column in a table of runs of these numbers of features."""
    kept = [d for d in num_inputs if d <= PER_FEATURE_COLUMNS_UP_TO]
    return max(kept, default=0)


def metric_columns(result: ChunkResult, C: int) -> dict[str, np.ndarray]:
    """What training measured, one value per run per checkpoint (run-major): every column of
    the table after the coordinates, in order. This, under the runs' keys, is what the run
    store keeps (study.store); the coordinates are the grid's to give."""
    R, d = result.w_hat.shape[0], result.w_true.shape[0]
    cols: dict[str, np.ndarray] = {}
    w_hat = result.w_hat.reshape(R * C, d)
    w_err = w_hat - result.w_true
    per_feature = d <= PER_FEATURE_COLUMNS_UP_TO
    for j in range(d if per_feature else 0):
        cols[f"w_hat_{j}"] = w_hat[:, j]
    for j in range(d if per_feature else 0):
        cols[f"w_err_{j}"] = w_err[:, j]
    cols["w_err_norm"] = _row_norms(w_err)
    cols["w_err_max"] = _row_max_abs(w_err)
    b_hat = result.b_hat.reshape(-1)
    cols["b_hat"] = b_hat
    cols["b_err"] = b_hat - result.b_true
    cols["train_loss"] = result.train_loss.reshape(-1)
    cols["val_mse"] = result.val_mse.reshape(-1)
    cols["grad_w_norm"] = _row_norms(result.grad_w.reshape(R * C, d))
    cols["grad_b"] = result.grad_b.reshape(-1)
    ols_w = np.repeat(result.ols_w, C, axis=0)
    cols["ols_w_err_norm"] = _row_norms(ols_w - result.w_true)
    cols["ols_b_err"] = np.repeat(result.ols_b, C) - result.b_true
    cols["gap_w_norm"] = _row_norms(w_hat - ols_w)
    cols["steps"] = np.tile(result.steps, R)
    cols["diverged"] = result.diverged.reshape(-1)
    return {name: np.ascontiguousarray(v) for name, v in cols.items()}


#: The string axes, held as categoricals: a byte a row, and fast to gather, group and compare.
STRING_AXES = ("loss", "reduction", "noise_kind", "average_from")


def ordered_categorical(values: Any) -> pd.Categorical:
    """A categorical of ``values`` whose categories are the values present, in order of first
    appearance (the grid's order, for a table in grid order), so that figures list them so."""
    cat = values if isinstance(values, pd.Categorical) else pd.Categorical(np.asarray(values, dtype=object))
    firsts = []
    for k in range(len(cat.categories)):  # a few categories over many rows: a pass each, no sort
        hit = cat.codes == k
        i = int(hit.argmax())
        if hit[i]:
            firsts.append((i, k))
    order = [k for _, k in sorted(firsts)]
    lookup = np.full(len(cat.categories) + 1, -1, dtype=cat.codes.dtype)  # the last entry: code -1 (missing)
    lookup[order] = np.arange(len(order))
    return pd.Categorical.from_codes(lookup[cat.codes], categories=cat.categories[order])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp makes files readable by their owner alone; results are shared, so they get the
#: permissions a plain open() would have given them.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, then rename: a reader sees the old
    file or the whole new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: Significant digits of the summary tables that are committed: what a median of float32
#: errors or a bootstrap quantile carries, so that the same study on another machine (whose
#: last bits differ) writes the same file.
SUMMARY_DIGITS = 6


def write_csv(df: pd.DataFrame, path: str | Path, significant: int | None = None) -> None:
    """Write df as CSV, atomically; floats at full precision, or rounded to ``significant``
    digits (a summary: see SUMMARY_DIGITS)."""
    fmt = None if significant is None else f"%.{significant}g"
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, float_format=fmt))


#: Rows of a Parquet row group: large enough for fast columnar reads, small enough that a reader
#: filtering on a few cells skips most of a big table.
ROW_GROUP_ROWS = 1 << 20


def write_table(
    df: pd.DataFrame, path: str | Path, metadata: dict | None = None, significant: int | None = None
) -> None:
    """Write df, atomically, as CSV or Parquet by the path's extension.

    Parquet (pyarrow) keeps the columns and dtypes (the string axes as dictionaries) and holds
    ``metadata`` in the file, under the schema's ``study`` key (read it with
    :func:`table_metadata`); CSV writes floats at full precision, or at ``significant`` digits.
    """
    if Path(path).suffix.lower() != ".parquet":
        write_csv(df, path, significant)
        return
    write_table_blocks(
        (df.iloc[i : i + ROW_GROUP_ROWS] for i in range(0, max(len(df), 1), ROW_GROUP_ROWS)),
        path,
        metadata,
        significant,
    )


def write_table_blocks(
    blocks: Iterable[pd.DataFrame], path: str | Path, metadata: dict | None = None, significant: int | None = None
) -> None:
    """Write a table given as consecutive blocks of rows (each of the same columns and dtypes),
    atomically, as CSV or Parquet by the path's extension, holding one block in memory at a time.

    A CSV gets its header once and the blocks' rows after it: the same bytes as writing their
    concatenation. A Parquet file gets each block as one or more row groups (of at most
    ROW_GROUP_ROWS rows) and ``metadata`` as with :func:`write_table`.
    """
    path = Path(path)
    fmt = None if significant is None else f"%.{significant}g"
    if path.suffix.lower() != ".parquet":

        def write_csv_blocks(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                for i, block in enumerate(blocks):
                    block.to_csv(f, index=False, header=i == 0, float_format=fmt)

        atomic_write(path, write_csv_blocks)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write_parquet(tmp: Path) -> None:
        writer = None
        try:
            for block in blocks:
                if writer is None:
                    table = pa.Table.from_pandas(block, preserve_index=False)
                    schema = table.schema
                    if metadata is not None:
                        extra = {b"study": json.dumps(metadata, sort_keys=True, default=str).encode()}
                        schema = schema.with_metadata({**(schema.metadata or {}), **extra})
                    writer = pq.ParquetWriter(tmp, schema)
                else:
                    table = pa.Table.from_pandas(block, schema=schema, preserve_index=False)
                writer.write_table(table.replace_schema_metadata(schema.metadata), row_group_size=ROW_GROUP_ROWS)
        finally:
            if writer is not None:
                writer.close()

    atomic_write(path, write_parquet)


def table_metadata(path: str | Path) -> dict:
    """The metadata a Parquet results table carries (an empty dict when it has none)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(b"study")
    return json.loads(raw) if raw else {}


def write_json(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a whole results table into memory, CSV or Parquet by extension, once it passed the
    checks of :func:`study.analysis.open_table` (its format, columns and types). For tables of
    any size, give the path itself to :func:`summarize`, :func:`diverged_runs` or the figures:
    they read only what they need."""
    from .analysis import open_table

    path = Path(path)
    open_table(path)
    df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    for axis in STRING_AXES:  # as run_grid gives them
        df[axis] = ordered_categorical(df[axis])
    return df


def default_by(table: Any) -> list[str]:
    """The grid axes that take more than one value in the table, and epoch."""
    from .analysis import open_table

    varying = open_table(table).varying((), AXES)
    return [a for a in AXES if a == "epoch" or a in varying]


# --- summaries: what is shown, over which runs, and what is pooled ---------------------------


class PoolingError(ValueError):
    """Axes that vary where a figure or a table shows one value: nothing is pooled silently.
    ``axes`` maps each axis to the values it takes, for a message that says what to choose."""

    def __init__(self, axes: dict[str, list], where: str):
        self.axes = axes
        super().__init__(
            f"{where} would pool over {describe_axes(axes)}; put them on the figure "
            "(hue, style, col, row) or select one value of each."
        )


#: The columns of least squares on the run's own training data. They depend on the data alone
#: (not on lr, loss, sigma, reduction or epoch, and never diverge), so they are summarized over
#: every run, once per data stream.
LEAST_SQUARES = ("ols_w_err_norm", "ols_b_err", "ols_b_err_abs")
#: The axes least squares depends on: those that choose the data (see study.grid's seeds), and
#: the number of features (runs of one replicate at several share their seed, not their data).
DATA_AXES = tuple(a for a in AXES if a in STREAM_KEYS or a == "num_inputs")
#: The smallest number of distinct x values a power law is fitted to: two points always lie on
#: a line, so two sizes give a slope with nothing to check it against.
MIN_FIT_LEVELS = 3


def axes_of(column: str) -> tuple[str, ...]:
    """The axes a column's values depend on: every axis, or the data's for least squares."""
    return DATA_AXES if column in LEAST_SQUARES else AXES


def format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def values_text(values: Sequence, limit: int = 8) -> str:
    """'0.01, 0.03, 0.1', or the first and last few of a long list with the count."""
    texts = [format_value(v) for v in values]
    if len(texts) > limit:
        texts = [*texts[: limit - 2], "…", texts[-1], f"({len(values)} values)"]
        return ", ".join(texts[:-1]) + " " + texts[-1]
    return ", ".join(texts)


def describe_axes(axes: dict[str, list]) -> str:
    """'loss (squared, huber) and lr (0.01, 0.03, 0.1)'."""
    parts = [f"{axis} ({values_text(values)})" for axis, values in axes.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def varying_axes(table: Any, placed: Sequence[str | None] = (), axes: Sequence[str] = AXES) -> dict[str, list]:
    """The axes (of ``axes``) that take more than one value among rows that agree on every
    column of ``placed``: what a figure or table with those columns would pool over.

    ``table``: a DataFrame, a results file's path, or a :class:`study.analysis.Table`.
    ``placed`` may hold derived columns (a label made of loss and sigma): an axis they
    determine is not pooled, whatever the column is called.
    """
    from .analysis import open_table

    return open_table(table).varying(placed, axes)


def _column_list(value: Any, name: str, where: str) -> list[str]:
    """A column name or a list of them (a string is one name, never its letters)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise ParameterError(name, where, "a column name or a non-empty list of them", value)
    return list(value)


def at_epoch(
    table: Any, epoch: int | None = None, *, placed: Sequence[str | None] = (), where: str = "parameter of at_epoch"
) -> tuple[Any, str]:
    """The rows at one checkpoint, and the words that say which.

    ``table``: a DataFrame (rows of it come back) or a path or Table (a Table comes back).
    ``epoch=None``: where ``epoch`` is among ``placed`` (a column of the table or the figure),
    every checkpoint; otherwise each run's last checkpoint, which the words name ("epoch 10,
    the last checkpoint").
    """
    from .analysis import open_table

    t = open_table(table)
    frame = isinstance(table, pd.DataFrame)
    checkpoints = [int(e) for e in t.values("epoch")]
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or int(epoch) not in checkpoints:
            raise ParameterError("epoch", where, f"one of the table's checkpoints ({values_text(checkpoints)})", epoch)
        return (table[table["epoch"] == epoch] if frame else t.select({"epoch": [int(epoch)]})), f"epoch {int(epoch)}"
    if "epoch" in placed:
        return (table if frame else t), f"every checkpoint (epochs {values_text(checkpoints)})"
    last_all = checkpoints[-1] if checkpoints else 0
    rows, ends = t.last_checkpoints()
    if frame:
        rows = table[table["epoch"] == ends[0]] if len(ends) == 1 else rows.frame()
    if ends == [last_all]:
        return rows, f"epoch {last_all} (the last checkpoint)"
    return rows, f"each run's last checkpoint (epochs {values_text(ends)})"


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
    by = default_by(t) if by is None else _column_list(by, "by", where)
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
    base = _matching(levels, _read_as(t.numeric(factor), str(baseline)) if isinstance(baseline, str) else baseline)
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
    by = [a for a in default_by(t) if a not in (factor, "epoch")] if by is None else _column_list(by, "by", where)
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


#: The least-squares error on the same data that a relative efficiency is taken against.
PAIRED = {"w_err_norm": "ols_w_err_norm", "b_err": "ols_b_err"}


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


def parse_where(table: Any, items: Sequence[str], *, where: str = "parameter of parse_where") -> dict[str, list]:
    """``["loss=huber", "lr=0.01,0.03"]`` as ``{"loss": ["huber"], "lr": [0.01, 0.03]}``, each
    value read as its column's type and checked against the values the table holds
    (``table``: a DataFrame, a results file's path, or a study.analysis.Table)."""
    from .analysis import open_table

    t = open_table(table) if items else None
    allowed_keys = [a for a in AXES if t is not None and a in t.columns]
    chosen: dict[str, list] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ParameterError("where", where, "KEY=VALUE, e.g. loss=huber or lr=0.01,0.03", item)
        if key not in allowed_keys:
            raise ParameterError(
                "where", where, f"KEY=VALUE with KEY one of the table's axes ({', '.join(allowed_keys)})", item
            )
        if key in chosen:
            raise ParameterError("where", where, f"given once for each axis ({key} is given twice)", item)
        assert t is not None  # opened above whenever there are items
        present = t.values(key)
        values = []
        for part in text.split(","):
            part = part.strip()
            value = _read_as(t.numeric(key), part)
            match = _matching(present, value)
            if match is None:
                raise ParameterError(
                    "where",
                    where,
                    f"one of the values {key} takes in the table ({key}={values_text(present, limit=12)})",
                    f"{key}={part}",
                )
            values.append(match)
        chosen[key] = list(dict.fromkeys(values))
    return chosen


def _read_as(numeric: bool, text: str) -> Any:
    if numeric:
        try:
            return float(text)
        except ValueError:
            return text  # no number matches it: refused with the values the column takes
    return text


def _matching(present: list, value: Any) -> Any:
    """The value of the table that ``value`` names: equal, or for numbers equal to 1e-9
    relative (0.0316 and 3.16e-2 name the same lr)."""
    for candidate in present:
        if isinstance(value, float) and isinstance(candidate, (int, float, np.integer, np.floating)):
            if math.isclose(float(candidate), value, rel_tol=1e-9, abs_tol=0.0):
                return candidate
        elif str(candidate) == str(value):
            return candidate
    return None


def select(df: Any, where: Mapping[str, Any] | None = None) -> Any:
    """The rows whose value of each axis in ``where`` is the one given (or one of a list): of a
    DataFrame, a DataFrame; of a study.analysis.Table, a Table."""
    if not isinstance(df, pd.DataFrame):
        for key in where or {}:
            if key not in df.columns:
                raise ParameterError(
                    "where",
                    "parameter of select",
                    f"a mapping from the table's columns ({', '.join(a for a in AXES if a in df.columns)})",
                    key,
                )
        return df.select(where)
    mask = np.ones(len(df), dtype=bool)
    for key, wanted in (where or {}).items():
        if key not in df.columns:
            raise ParameterError(
                "where",
                "parameter of select",
                f"a mapping from the table's columns ({', '.join(a for a in AXES if a in df.columns)})",
                key,
            )
        wanted = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        mask &= df[key].isin(wanted).to_numpy()
    return df[mask]


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
