"""The run-keyed store: finished runs kept under their keys, and the table assembled from them.

A run's numbers are a pure function of its key (study.grid.run_keys: its cell, replicate, the
grid's settings and stream), the engine, the schema and the checkpoints it was asked for. So
results are kept per run. Each finished chunk is one *segment*: its runs' keys, the checkpoints
they were trained to, and what training measured (study.schema.metric_columns), one value
per run per checkpoint. The coordinates of a row (lr, replicate, seed, ...) are not stored:
the grid gives them (study.plan.Plan.runs_at).

With an output path, segments are files in ``OUT.store/`` (see :func:`save_segment` for the
layout), each written atomically with a sha256 digest of its contents: a truncated or damaged
file fails its digest and its runs are computed again; a file of another schema, engine,
engine revision (vocabulary.ENGINE_REVISIONS) or stream is never read as this run's. A rerun
of the same spec, or of a grown or changed one, looks every run up by key and computes only
those the store lacks. The store outlives the
table it fed, so that the next grid on the same output starts from it; ``resume=False``
(``study run --fresh``) empties it first.

Checkpoints: a stored run is reused when it holds every checkpoint the grid asks for (a subset
of its rows is taken). A run asked for a checkpoint it lacks is trained again from the start
with the grid's checkpoints: the store keeps no optimiser state to continue from, and a run's
first epochs are the same numbers whatever it goes on to do, so only the time is spent.

The table is assembled in the grid's order, block by block (:func:`table_blocks`), so that a
table of any size is written holding one block in memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .plan import Plan
from .schema import ROW_GROUP_ROWS, SCHEMA_VERSION, STRING_AXES, atomic_write, feature_columns, metric_names
from .vocabulary import AXES, ENGINE_REVISIONS, average_text

__all__: list[str] = []  # private: see study/__init__.py

#: A segment file starts with this line, then the sha256 of everything after the digest.
MAGIC = b"study-runs 1\n"
#: The file name ending of a segment.
SUFFIX = ".runs"
#: The file in a store that says which grid its runs are being trained for (RunStore.describe).
GRID_FILE = "grid.json"
_HASH_PIECE = 1 << 24  # bytes hashed at a time when a segment is checked: memory stays flat


@dataclass
class Segment:
    """What some runs gave: their keys, the checkpoints they were trained to, and the measured
    columns (each ``len(keys) * len(checkpoints)`` values, run-major)."""

    keys: np.ndarray
    checkpoints: tuple[int, ...]
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.keys)


def save_segment(path: Path, segment: Segment, *, engine: str, stream: str) -> dict[str, tuple[np.dtype, int]]:
    """Write a segment, atomically; return where each column's values start in the file.

    Layout: MAGIC, the 32-byte sha256 of the rest, the header's length (8 bytes, little-endian),
    the header (JSON: schema, engine and its revision, stream, checkpoints, runs, and each
    column's name and dtype), the keys (uint64), then each column's values, one after the other.
    """
    columns = [(name, np.ascontiguousarray(values)) for name, values in segment.columns.items()]
    header = json.dumps(
        {
            "schema": SCHEMA_VERSION,
            "engine": engine,
            "revision": ENGINE_REVISIONS[engine],
            "stream": stream,
            "checkpoints": list(segment.checkpoints),
            "runs": len(segment),
            "columns": [[name, values.dtype.str] for name, values in columns],
        },
        sort_keys=True,
    ).encode()
    parts: list[bytes | memoryview] = [
        struct.pack("<Q", len(header)),
        header,
        np.ascontiguousarray(segment.keys, dtype="<u8").tobytes(),
    ]
    # numpy declares ndarray.__buffer__ only for Python >= 3.12; on 3.11 it is a buffer all the same
    parts += [memoryview(values).cast("B") for _, values in columns]  # type: ignore[arg-type]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(digest.digest())
            for part in parts:
                f.write(part)

    atomic_write(path, write)
    return _column_layout(
        len(MAGIC) + 32 + 8 + len(header) + 8 * len(segment),
        [(name, values.dtype, values.size) for name, values in columns],
    )


def _column_layout(start: int, columns: list[tuple[str, np.dtype, int]]) -> dict[str, tuple[np.dtype, int]]:
    """Each column's (dtype, byte offset), the columns' values laid one after the other from
    ``start``; ``columns``: (name, dtype, number of values)."""
    layout = {}
    for name, dtype, count in columns:
        layout[name] = (dtype, start)
        start += count * dtype.itemsize
    return layout


@dataclass
class _Head:
    """A segment file's header, its keys, and where each column's values start."""

    path: Path
    checkpoints: tuple[int, ...]
    keys: np.ndarray
    columns: dict[str, tuple[np.dtype, int]]  # name -> (dtype, byte offset in the file)


@dataclass(frozen=True)
class Damage:
    """A file of the store that could not be read: where, why, and the runs it held (None
    where its header is unreadable too)."""

    path: Path
    reason: str
    runs: int | None

    def __str__(self) -> str:
        held = f"its {self.runs:,} runs" if self.runs is not None else "its runs (how many: unreadable)"
        return f"{self.path} is damaged ({self.reason}): {held}"


def _header_runs(path: Path) -> int | None:
    """The run count a segment's header states, read without its digest; None if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(len(MAGIC) + 32)
            (size,) = struct.unpack("<Q", f.read(8))
            return int(json.loads(f.read(min(size, 1 << 20)))["runs"])
    except Exception:
        return None


def read_segment_head(path: Path, *, engine: str, stream: str, damage: list[Damage] | None = None) -> _Head | None:
    """A segment's header and keys, once its digest is checked; None for a file that is
    truncated, damaged, not a segment, or of another schema, engine, engine revision or stream.
    The damaged ones (all but another schema's, engine's or stream's) are added to ``damage``."""

    def damaged(reason: str, runs: int | None = None) -> None:
        if damage is not None:
            damage.append(Damage(path, reason, runs))

    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                damaged("it does not start as a segment of runs does")
                return None
            expected = f.read(32)
            digest = hashlib.sha256()
            while piece := f.read(_HASH_PIECE):
                digest.update(piece)
            if digest.digest() != expected:
                damaged("its contents fail their sha256 digest: truncated or altered", _header_runs(path))
                return None
            at = len(MAGIC) + 32
            f.seek(at)
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            if (header["schema"], header["engine"], header.get("revision"), header["stream"]) != (
                SCHEMA_VERSION,
                engine,
                ENGINE_REVISIONS[engine],
                stream,
            ):
                return None  # another engine's or stream's runs: kept for it, not damage
            runs, C = int(header["runs"]), len(header["checkpoints"])
            keys = np.frombuffer(f.read(8 * runs), dtype="<u8").astype(np.uint64)
        columns = _column_layout(
            at + 8 + size + 8 * runs, [(name, np.dtype(dtype), runs * C) for name, dtype in header["columns"]]
        )
        return _Head(path, tuple(int(c) for c in header["checkpoints"]), keys, columns)
    except Exception as err:  # an unreadable file is recomputed, whatever broke in reading it
        damaged(f"it cannot be read: {type(err).__name__}", _header_runs(path))
        return None


class RunStore:
    """Finished runs by key: segment files in ``folder``, or segments in memory (``folder=None``).

    Parameters
    ----------
    folder : Path or None
        Where segments are kept (made on the first :meth:`add`). Segments already there are
        read (their headers and keys, each file's digest checked) and those of this ``engine``
        and ``stream`` whose checkpoints include ``checkpoints`` serve lookups.
    checkpoints : sequence of int
        The checkpoints the table is assembled at (epoch 0 included).
    read : bool, default=True
        Whether to read the segments already in ``folder`` (False: start from none; see
        :meth:`clear` to remove them).
    """

    def __init__(
        self, folder: Path | None, *, engine: str, stream: str, checkpoints: Sequence[int], read: bool = True
    ) -> None:
        self.folder, self.engine, self.stream = folder, engine, stream
        self.checkpoints = tuple(int(c) for c in checkpoints)
        self._sources: list[_Head | Segment] = []
        self._keys: list[np.ndarray] = []
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        #: The files that could not be read (see :class:`Damage`): said by whoever reads the store.
        self.damaged: list[Damage] = []
        if read and folder is not None and folder.is_dir():
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                head = read_segment_head(path, engine=engine, stream=stream, damage=self.damaged)
                if head is not None and set(self.checkpoints) <= set(head.checkpoints):
                    self._append(head)

    def _append(self, source: _Head | Segment) -> None:
        self._sources.append(source)
        self._keys.append(source.keys)
        self._index = None

    def add(self, segment: Segment, name: str) -> None:
        """Keep a finished chunk's runs (on disk as ``name`` + SUFFIX, when the store has a folder)."""
        if self.folder is None:
            self._append(segment)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}{SUFFIX}"
        layout = save_segment(path, segment, engine=self.engine, stream=self.stream)
        self._append(_Head(path, tuple(segment.checkpoints), np.asarray(segment.keys, dtype=np.uint64), layout))

    def describe(self, grid: Any) -> None:
        """Write what grid the store's runs are being trained for (GRID_FILE: its spec, engine,
        stream and checkpoints), so that the finished runs can be read as a table while it
        runs or after it stopped (:func:`held_table`)."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {
                "spec": grid.to_dict(),
                "engine": self.engine,
                "stream": self.stream,
                "checkpoints": list(self.checkpoints),
                "schema": SCHEMA_VERSION,
            },
            sort_keys=True,
            default=str,
        )
        atomic_write(self.folder / GRID_FILE, lambda tmp: tmp.write_text(text + "\n"))

    def clear(self) -> None:
        """Forget every run, and remove the segment files (and temporary files of a killed write)."""
        if self.folder is not None and self.folder.is_dir():
            for path in self.folder.iterdir():
                if path.name.endswith(SUFFIX) or path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
        self._sources, self._keys, self._index = [], [], None

    def __len__(self) -> int:
        """Runs held (a run kept twice counts once)."""
        return len(self._lookup()[0])

    def _lookup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sorted distinct keys, the source of each, its position there). A run kept in two
        segments is taken from the later one."""
        if self._index is None:
            if not self._keys:
                empty = np.empty(0, dtype=np.int64)
                self._index = (np.empty(0, dtype=np.uint64), empty, empty)
            else:
                keys = np.concatenate(self._keys)
                source = np.repeat(np.arange(len(self._keys)), [len(k) for k in self._keys])
                position = np.concatenate([np.arange(len(k)) for k in self._keys])
                order = np.argsort(keys, kind="stable")  # stable: a key's later copies come last
                keys, source, position = keys[order], source[order], position[order]
                last = np.append(keys[1:] != keys[:-1], True)
                self._index = (keys[last], source[last], position[last])
        return self._index

    def has(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key's run is held (a boolean array)."""
        stored = self._lookup()[0]
        if len(stored) == 0:
            return np.zeros(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
        return stored[at] == keys

    def gather(self, keys: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The measured columns ``names`` (default: the first source's) of the given runs (all
        held), ``len(keys) * C`` values each, run-major, at the store's checkpoints; NaN where a
        run has no such column (a feature's column of a run of fewer features, or of more than
        PER_FEATURE_COLUMNS_UP_TO)."""
        stored, source, position = self._lookup()
        at = np.searchsorted(stored, keys)
        if len(keys) and (at.max(initial=0) >= len(stored) or not np.array_equal(stored[at], keys)):
            raise KeyError("gather: some runs are not in the store")
        src, pos = source[at], position[at]
        C = len(self.checkpoints)
        # The rows of each source, by one sort (not a pass over all rows per source: a grid of
        # 1M runs on CPUs has hundreds of segments). A chunk's runs lie in a few contiguous
        # stretches of the table (one per lr, loss, sigma and reduction): copied stretch by
        # stretch, not row by row, and a column at a time (a column's stretches from every
        # source, then the next column, so that one column is written at once, not sixteen).
        by_source = np.argsort(src, kind="stable")
        sources, starts = np.unique(src[by_source], return_index=True)
        groups = []
        spans: list[tuple[Any, Any]] | None  # None: scattered rows, copied one by one
        for s, rows in zip(sources, np.split(by_source, starts[1:])):
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            spans = list(zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])))
            source_ = self._sources[s]
            spans = spans if len(spans) * 16 <= len(rows) else None
            groups.append((source_, rows, self._where(source_, pos[rows]), spans))
        out: dict[str, np.ndarray] = {}
        scratch = _Scratch()
        if names is None:
            names = list(self._sources[sources[0]].columns) if len(keys) else []
        for name in names:
            to = None
            missing = []  # the groups whose source lacks the column (runs of more or fewer features)
            for source_, rows, where, spans in groups:
                values = self._column(source_, name, where, scratch)
                if values is None:
                    missing.append(rows)
                    continue
                if to is None:
                    out[name] = np.empty(len(keys) * C, dtype=values.dtype)
                    to = out[name].reshape(len(keys), C)
                values = values.reshape(len(rows), C)
                if spans is None:  # scattered rows (a partial store): one by one
                    to[rows] = values
                    continue
                for a, b in spans:
                    to[rows[a] : rows[a] + b - a] = values[a:b]
            if to is None:  # no run has it: a feature's column of runs that all have fewer
                out[name] = np.empty(len(keys) * C, dtype=np.float32)
                to = out[name].reshape(len(keys), C)
            for rows in missing:
                to[rows] = np.nan
        return out

    def _column(
        self, source: _Head | Segment, name: str, where: tuple[int, int, np.ndarray | None], scratch: _Scratch
    ) -> np.ndarray | None:
        """Column ``name`` of a source at ``where`` (see :meth:`_read`), None where it has none.
        A segment from before ``w_err_max`` existed gives it from its w_err_j (the same
        arithmetic as study.schema.metric_columns: it held every feature's column)."""
        if name in source.columns:
            return self._read(source, name, where, scratch)
        if name != "w_err_max":
            return None
        acc = None
        for j in itertools.count():
            if f"w_err_{j}" not in source.columns:
                return acc
            values = np.abs(self._read(source, f"w_err_{j}", where, scratch))
            acc = values.copy() if acc is None else np.maximum(acc, values)
        raise AssertionError("unreachable: itertools.count() never ends")

    def _where(self, source: _Head | Segment, pos: np.ndarray) -> tuple[int, int, np.ndarray | None]:
        """Where the runs at ``pos`` of one source lie in each of its columns: the span of its
        values from the first run asked to the last, [lo, hi) in values, and the positions to
        take in it at the store's checkpoints (None: the whole span, in order)."""
        have = source.checkpoints
        Cs = len(have)
        pick = np.array([have.index(c) for c in self.checkpoints])
        lo, hi = int(pos.min()), int(pos.max()) + 1
        # Usually the runs asked are a whole segment, in its order, at all its checkpoints: a
        # slice of each column then, not an index.
        whole = len(pos) == hi - lo and (np.diff(pos) == 1).all() and np.array_equal(pick, np.arange(Cs))
        return lo * Cs, hi * Cs, None if whole else ((pos - lo)[:, None] * Cs + pick).ravel()

    def _read(
        self, source: _Head | Segment, name: str, where: tuple[int, int, np.ndarray | None], scratch: _Scratch
    ) -> np.ndarray:
        """Column ``name`` of one source at ``where`` (see :meth:`_where`), flat (from a file: a
        view of ``scratch``, valid until its next use)."""
        lo, hi, rows = where
        if isinstance(source, Segment):
            values = source.columns[name][lo:hi]
            return values if rows is None else values[rows]
        # From the file: the span of rows from the first run asked to the last, read at once
        # (runs of a block are mostly neighbours in a segment).
        dtype, offset = source.columns[name]
        size = (hi - lo) * dtype.itemsize
        fd = os.open(source.path, os.O_RDONLY)
        try:
            raw = scratch.read(fd, size, offset + lo * dtype.itemsize)
        finally:
            os.close(fd)
        if len(raw) != size:
            raise OSError(f"{source.path} was truncated while the table was assembled")
        values = np.frombuffer(raw, dtype=dtype)
        return values if rows is None else values[rows]


class _Scratch:
    """One buffer that reads from segment files land in, reused: a fresh buffer per read is
    fresh memory for the system to map each time (measured: 0.2 s of a million runs' table)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def read(self, fd: int, size: int, offset: int) -> memoryview | bytes:
        if not hasattr(os, "preadv"):  # (not on every platform)
            return os.pread(fd, size, offset)
        if len(self.buffer) < size:
            self.buffer = bytearray(size)
        view = memoryview(self.buffer)[:size]
        return view[: os.preadv(fd, [view], offset)]


def _coordinates(plan: Plan, runs: dict[str, np.ndarray], checkpoints: Sequence[int]) -> dict[str, Any]:
    """The coordinate columns of the given runs (Plan.runs_at), one row per run per checkpoint."""
    g, C = plan.grid, len(checkpoints)
    cols: dict[str, Any] = {}
    for axis in AXES:
        if axis == "epoch":
            cols[axis] = np.tile(np.asarray(checkpoints, dtype=np.int64), len(runs["index"]))
        elif axis in STRING_AXES:
            # Categories in the grid's order, the same in every block of a table: the codes
            # are the values' positions in the grid.
            codes = np.repeat(runs["codes"][axis].astype(np.int8), C)
            values = getattr(g, axis)
            cols[axis] = pd.Categorical.from_codes(
                codes, categories=[average_text(v) for v in values] if axis == "average_from" else list(values)
            )
        elif axis in runs["applies"] and not runs["applies"][axis].all():
            # Not applicable (APPLIES_ONLY): a missing value, not the value training ignored.
            cols[axis] = np.repeat(np.where(runs["applies"][axis], runs[axis], np.nan), C)
        else:
            cols[axis] = np.repeat(runs[axis], C)
    cols["replicate"] = np.repeat(runs["replicate"], C)
    cols["seed"] = np.repeat(runs["seed"], C)
    return cols


#: Rows of a block of the table as it is assembled and written.
BLOCK_ROWS = ROW_GROUP_ROWS


def table_blocks(
    plan: Plan, store: RunStore, *, only_held: bool = False, block_rows: int = BLOCK_ROWS
) -> Iterator[pd.DataFrame]:
    """The table of the plan's grid, in the grid's order (run, then checkpoint), as DataFrames of
    at most about ``block_rows`` rows. Every run must be held, or with ``only_held`` the runs
    that are not are left out (a partial table)."""
    assert plan.grid.num_inputs is not None  # Grid.__post_init__ fills num_inputs (None: one, len(w))
    C = len(store.checkpoints)
    per = max(1, block_rows // C)
    for start in range(0, plan.n_runs, per):
        runs = plan.runs_at(np.arange(start, min(start + per, plan.n_runs)))
        if only_held:
            held = store.has(runs["key"])
            if not held.all():
                runs = {
                    name: ({a: v[held] for a, v in values.items()} if name in ("codes", "applies") else values[held])
                    for name, values in runs.items()
                }
            if len(runs["key"]) == 0:
                continue
        cols = _coordinates(plan, runs, store.checkpoints)
        cols.update(store.gather(runs["key"], metric_names(feature_columns(plan.grid.num_inputs))))
        yield pd.DataFrame(cols, copy=False)


def table_frame(plan: Plan, store: RunStore, *, only_held: bool = False) -> pd.DataFrame | None:
    """The whole table as one DataFrame (None when no run is held): one block of
    :func:`table_blocks` the table's length, its columns made at their full size once (the
    frame takes them without a copy; blocks copied into it took a third of the time)."""
    if only_held:
        held = list(table_blocks(plan, store, only_held=True))
        return pd.concat(held, ignore_index=True) if held else None
    return next(table_blocks(plan, store, block_rows=max(1, plan.n_runs * len(store.checkpoints))), None)


@dataclass
class Held:
    """The finished runs of a store, written as a table (see :func:`held_table`)."""

    path: Path  # the Parquet file they were written to
    runs: int  # runs held
    total: int  # runs of the grid
    name: str  # the grid's name
    damaged: list[Damage]


def held_table(folder: Path, into: Path) -> Held | None:
    """The runs a store holds of the grid it was last described for (:meth:`RunStore.describe`),
    written, in the grid's order, one block at a time, as the Parquet file ``into`` (its
    metadata marks it partial: whether every run is held, :class:`Held` says). None where the
    store describes no grid."""
    from .grid import Grid
    from .schema import write_table_blocks

    try:
        described = json.loads((folder / GRID_FILE).read_text())
        grid = Grid(**described["spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if described.get("schema") != SCHEMA_VERSION:
        return None
    store = RunStore(folder, engine=described["engine"], stream=described["stream"], checkpoints=grid.checkpoints)
    plan = Plan(grid, lambda *_: grid.n_runs)  # one chunk a group: only its order is used here
    identity = {
        "name": grid.name,
        "spec": grid.to_dict(),
        "schema_version": SCHEMA_VERSION,
        "engine": described["engine"],
        "stream": described["stream"],
        "partial": True,
    }
    rows = [0]

    def counted(blocks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for block in blocks:
            rows[0] += len(block)
            yield block

    if len(store):
        write_table_blocks(counted(table_blocks(plan, store, only_held=True)), into, identity)
    held = rows[0] // len(grid.checkpoints)
    if held == 0:
        into.unlink(missing_ok=True)
    return Held(into, held, plan.n_runs, grid.name, store.damaged)
