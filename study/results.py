"""The tidy results table: its schema, atomic CSV + metadata writing, and summaries.

One row per run per checkpoint. Columns, in order:

- the grid coordinates: ``num_train, lr, epoch, loss, sigma, reduction, batch_size, noise,
  noise_kind``, then ``replicate`` and ``seed`` (the run's own seed: ``SyntheticRegressionData(...,
  seed=seed)`` rebuilds its data);
- ``w_hat_j`` and ``w_err_j`` = ŵ_j − w_j for each feature j, ``w_err_norm`` = ‖ŵ − w‖₂,
  ``b_hat``, ``b_err`` = b̂ − b (w and b are the float32 values the data were generated with);
- ``train_loss`` (mean per-example training loss of the run's loss, for ``sum`` runs too),
  ``val_mse``, ``grad_w_norm`` and ``grad_b`` (full-batch gradient of ``train_loss``);
- ``ols_w_err_norm``, ``ols_b_err`` (least squares on the same training data) and
  ``gap_w_norm`` = ‖ŵ − ŵ_ols‖ (what optimisation has yet to close);
- ``steps`` (SGD updates so far) and ``diverged``: ŵ, b̂ or the training loss is no longer
  finite, or the loss has grown past DIVERGENCE_FACTOR (100) times its value at the start.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .engine import ChunkResult, as_chunk
from .grid import AXES, Run
from .plan import Chunk

__all__ = [
    "SCHEMA_VERSION", "COORDINATES", "STRING_AXES", "ordered_categorical", "ERROR_METRICS", "to_frame", "finish", "write_csv", "write_json",
    "atomic_write", "summarize", "read_results", "write_table", "table_metadata", "default_by", "PowerLaw", "fit_power_law",
]

#: Bumped whenever a column is added, removed or changes meaning; saved chunks of another
#: version are never reused.
SCHEMA_VERSION = 1
COORDINATES = (*AXES, "replicate", "seed")
#: The error measures a summary describes, each a magnitude (absolute errors for b).
ERROR_METRICS = ("w_err_norm", "b_err_abs", "ols_w_err_norm", "ols_b_err_abs", "gap_w_norm", "val_mse")
_STATS = ("mean", "median", "q10", "q90")


def to_frame(runs: Chunk | Sequence[Run], checkpoints: Sequence[int], result: ChunkResult) -> pd.DataFrame:
    """The tidy rows of one chunk: runs x checkpoints, run-major, with ``_index`` (grid order)."""
    chunk = as_chunk(runs)
    R, C = len(chunk), len(checkpoints)
    d = result.w_true.shape[0]

    def per_row(values: np.ndarray) -> np.ndarray:  # one value per run, repeated per checkpoint
        return np.repeat(values, C)

    cols: dict[str, Any] = {}
    for axis in AXES:
        if axis == "epoch":
            cols[axis] = np.tile(np.asarray(checkpoints, dtype=np.int64), R)
        elif axis in STRING_AXES:
            cat = pd.Categorical(np.asarray(chunk.column(axis), dtype=object))
            cols[axis] = pd.Categorical.from_codes(per_row(cat.codes), categories=cat.categories)
        else:
            cols[axis] = per_row(chunk.column(axis))
    cols["replicate"] = per_row(chunk.replicate.astype(np.int64))
    cols["seed"] = per_row(chunk.seed.astype(np.int64))
    w_hat = result.w_hat.reshape(R * C, d)
    w_err = w_hat - result.w_true
    for j in range(d):
        cols[f"w_hat_{j}"] = w_hat[:, j]
    for j in range(d):
        cols[f"w_err_{j}"] = w_err[:, j]
    cols["w_err_norm"] = np.linalg.norm(w_err, axis=1)
    b_hat = result.b_hat.reshape(-1)
    cols["b_hat"] = b_hat
    cols["b_err"] = b_hat - result.b_true
    cols["train_loss"] = result.train_loss.reshape(-1)
    cols["val_mse"] = result.val_mse.reshape(-1)
    cols["grad_w_norm"] = np.linalg.norm(result.grad_w.reshape(R * C, d), axis=1)
    cols["grad_b"] = result.grad_b.reshape(-1)
    ols_w = np.repeat(result.ols_w, C, axis=0)
    cols["ols_w_err_norm"] = np.linalg.norm(ols_w - result.w_true, axis=1)
    cols["ols_b_err"] = np.repeat(result.ols_b, C) - result.b_true
    cols["gap_w_norm"] = np.linalg.norm(w_hat - ols_w, axis=1)
    cols["steps"] = np.tile(result.steps, R)
    cols["diverged"] = result.diverged.reshape(-1)
    cols["_index"] = per_row(chunk.index.astype(np.int64))
    return pd.DataFrame(cols, copy=False)


#: The string axes, held as categoricals: a byte a row, and fast to gather, group and compare.
STRING_AXES = ("loss", "reduction", "noise_kind")


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


def finish(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The chunk frames as one table in grid order (run, then epoch): never in completion order.

    Each chunk's rows are written straight to their places in the table (a run of grid index i
    is the rank of i among the runs present), one pass over each column, with no concatenation
    and no sort of the rows: the table of a million runs is assembled in about the time it
    takes to copy it.
    """
    sizes, runs = [], []
    for frame in frames:
        index = frame["_index"].to_numpy()
        C = int(np.argmax(index != index[0])) or len(index)  # rows per run: checkpoints are consecutive
        sizes.append(C)
        runs.append(index[::C])
    C = sizes[0]
    if any(c != C for c in sizes):
        raise ValueError("The chunks of one table must have the same checkpoints.")
    all_runs = np.concatenate(runs)
    order = np.argsort(all_runs, kind="stable")
    rank = np.empty(len(all_runs), dtype=np.int64)
    rank[order] = np.arange(len(all_runs))
    total = len(all_runs) * C
    offsets = np.cumsum([0] + [len(r) for r in runs])
    places = [(rank[lo:hi, None] * C + np.arange(C)).ravel() for lo, hi in zip(offsets[:-1], offsets[1:])]
    # Where a chunk's places run on by one (its runs are in grid order), it is copied block by
    # block, at the speed of memory; elsewhere row by row.
    blocks = []
    for place in places:
        cut = np.flatnonzero(np.diff(place) != 1) + 1
        starts, stops = np.concatenate([[0], cut]), np.concatenate([cut, [len(place)]])
        blocks.append([(int(a), int(b), int(place[a])) for a, b in zip(starts, stops)] if len(cut) < 64 else None)

    def scatter(out: np.ndarray, values: np.ndarray, place: np.ndarray, block) -> None:
        if block is None:
            out[place] = values
        else:
            for a, b, at in block:
                out[at : at + b - a] = values[a:b]

    columns: dict[str, Any] = {}
    for name in frames[0].columns:
        if name == "_index":
            continue
        first = frames[0][name]
        if isinstance(first.dtype, pd.CategoricalDtype):
            categories = pd.Index(pd.unique(np.concatenate([np.asarray(f[name].cat.categories, dtype=object) for f in frames])))
            codes = np.empty(total, dtype=np.int16)
            for frame, place, block in zip(frames, places, blocks):
                cat = frame[name].cat
                scatter(codes, categories.get_indexer(cat.categories)[cat.codes], place, block)
            columns[name] = ordered_categorical(pd.Categorical.from_codes(codes, categories=categories))
        else:
            out = np.empty(total, dtype=first.to_numpy().dtype)
            for frame, place, block in zip(frames, places, blocks):
                scatter(out, frame[name].to_numpy(), place, block)
            columns[name] = out
    return pd.DataFrame(columns, copy=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp makes files readable by their owner alone; results are shared, so they get the
#: permissions a plain open() would have given them.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
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


def write_table(df: pd.DataFrame, path: str | Path, metadata: dict | None = None, significant: int | None = None) -> None:
    """Write df, atomically, as CSV or Parquet by the path's extension.

    Parquet (pyarrow) keeps the columns and dtypes (the string axes as dictionaries) and holds
    ``metadata`` in the file, under the schema's ``study`` key (read it with
    :func:`table_metadata`); CSV writes floats at full precision, or at ``significant`` digits.
    """
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        write_csv(df, path, significant)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata is not None:
        extra = {b"study": json.dumps(metadata, sort_keys=True, default=str).encode()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS))


def table_metadata(path: str | Path) -> dict:
    """The metadata a Parquet results table carries (an empty dict when it has none)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(b"study")
    return json.loads(raw) if raw else {}


def write_json(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a results table, CSV or Parquet by extension; refuses a file that lacks the
    schema's coordinates and errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No results file at {str(path)!r}.")
    parquet = path.suffix.lower() == ".parquet"
    try:
        df = pd.read_parquet(path) if parquet else pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as err:
        kind = "Parquet" if parquet else "CSV"
        raise ValueError(f"{str(path)!r} is not a results {kind} file: {' '.join(str(err).split())}") from None
    missing = [c for c in (*COORDINATES, "w_err_norm", "b_err", "diverged") if c not in df.columns]
    if missing:
        raise ValueError(f"{str(path)!r} is not a results CSV of this schema: it lacks the columns {missing}.")
    for axis in STRING_AXES:  # as run_grid gives them
        df[axis] = ordered_categorical(df[axis])
    return df


def default_by(df: pd.DataFrame) -> list[str]:
    """The grid axes that take more than one value in df, and epoch."""
    return [a for a in AXES if a == "epoch" or df[a].nunique() > 1]


def summarize(df: pd.DataFrame, by: Sequence[str] | None = None, stats: Sequence[str] = tuple(_STATS)) -> pd.DataFrame:
    """Per grid cell: the count of runs, how many diverged, and statistics of each error.

    Parameters
    ----------
    df : DataFrame
        A results table (one row per run per checkpoint).
    by : str or list of str, optional
        The columns that define a cell; default: the axes that vary, and ``epoch``. When
        ``epoch`` is not among them, each run's last checkpoint is used.
    stats : sequence of {"mean", "median", "q10", "q90"}

    Returns
    -------
    DataFrame
        One row per cell: the ``by`` columns, ``count``, ``diverged``, then ``<metric>_<stat>``
        for each metric of ERROR_METRICS (w_err_norm, b_err_abs, ...), computed over the runs
        that did not diverge.
    """
    by = list(default_by(df) if by is None else [by] if isinstance(by, str) else by)
    unknown = [c for c in by if c not in df.columns]
    if unknown:
        raise ValueError(f"The 'by' parameter of summarize must name columns of the table; {unknown} are not among {list(df.columns)}.")
    bad = [s for s in stats if s not in _STATS]
    if bad:
        raise ValueError(f"The 'stats' parameter of summarize must be among {list(_STATS)}. Got {bad} instead.")
    if "epoch" not in by:
        last = df.groupby(["seed", *[a for a in AXES if a != "epoch"]], observed=True)["epoch"].transform("max")
        df = df[df["epoch"] == last]
    df = df.assign(b_err_abs=df["b_err"].abs(), ols_b_err_abs=df["ols_b_err"].abs())
    out = df.groupby(by, sort=True, observed=True).agg(count=("diverged", "size"), diverged=("diverged", "sum"))
    # pandas' own grouped mean, median and quantiles (compiled), one call each for all metrics:
    # a Python function per group would be called once per cell and metric.
    finite = df[~df["diverged"].astype(bool)].groupby(by, sort=True, observed=True)[list(ERROR_METRICS)]
    computed = {"mean": finite.mean, "median": finite.median, "q10": lambda: finite.quantile(0.1),
                "q90": lambda: finite.quantile(0.9)}
    values = {stat: computed[stat]() for stat in stats}
    for metric in ERROR_METRICS:
        for stat in stats:
            out[f"{metric}_{stat}"] = values[stat][metric]
    return out.reset_index()


@dataclass(frozen=True)
class PowerLaw:
    """y ≈ prefactor · x^slope, with a bootstrap interval for the slope."""

    slope: float
    prefactor: float
    low: float  # 2.5% bootstrap quantile of the slope
    high: float  # 97.5%

    def __call__(self, x: Any) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=float) ** self.slope


def fit_power_law(x: Sequence[float], y: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> PowerLaw:
    """Fit y ≈ c · x^k by least squares on the logs of the per-x medians.

    Parameters
    ----------
    x, y : sequences of positive numbers, one pair per run (several runs per x).
    n_boot : int, default=1000
        Bootstrap resamples (runs resampled within each x) for the 95% interval of k.
    seed : int, default=0
        Seeds the bootstrap, so the interval is reproducible.

    Examples
    --------
    >>> x = np.repeat([10, 100, 1000], 5); fit = fit_power_law(x, 3.0 * x ** -0.5)
    >>> round(fit.slope, 6), round(fit.prefactor, 6)
    (-0.5, 3.0)
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    levels = np.unique(x)
    if len(levels) < 2:
        raise ValueError(f"A power law needs positive values at two x or more; got x levels {levels.tolist()}.")
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
    return PowerLaw(slope=k, prefactor=float(np.exp(logc)), low=float(low), high=float(high))
