"""The tidy results table: its columns, and its files (written atomically, read back checked).

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
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .vocabulary import AXES, CHOICES, PER_FEATURE_COLUMNS_UP_TO

if TYPE_CHECKING:  # a table is read, summarized and drawn without torch
    from .engine import ChunkResult

__all__: list[str] = []  # private: see study/__init__.py

#: Bumped whenever a column is added, removed or changes meaning; stored runs of another
#: version are never reused.
SCHEMA_VERSION = 1
COORDINATES = (*AXES, "replicate", "seed")


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
STRING_AXES = tuple(CHOICES)


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
