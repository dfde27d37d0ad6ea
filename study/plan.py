"""Planning: a grid as arrays, cut into chunks of whole streams, sized to their device.

A grid of millions of runs is never a list of Python objects. Its runs are enumerated by axis
indices; a :class:`Chunk` holds its runs as columns (NumPy arrays), made only when the chunk is
dispatched, with its seeds and run keys computed as arrays (:func:`study.grid.stream_seeds`,
:func:`study.grid.run_keys`).

A chunk holds runs of one (num_train, batch_size, drop_last), so that they share a step schedule, and
whole streams: every run of a stream (the runs that differ only in lr, loss, sigma or
reduction) is in the same chunk, so its data are drawn once. Within a (num_train, batch_size)
group, streams are ordered by (noise, noise_kind, replicate), and a chunk's runs are in the
grid's own order: by (lr, loss, sigma, reduction), then by stream.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .grid import Grid, Run, applies, key_cell, run_keys, stream_seeds
from .vocabulary import APPLIES_ONLY, OPTIMIZER_AXES, OPTIMIZER_DEFAULTS, RUN_AXES

__all__: list[str] = []  # private: see study/__init__.py

#: Runs per chunk of the reference engine (a run takes milliseconds to seconds there): small
#: enough that an interrupted grid resumes at a fine grain.
REFERENCE_CHUNK_RUNS = 256
#: The share of a GPU's free memory one chunk may take (the rest: the CUDA context, the
#: allocator's slack, and the copy of the chunk's results).
GPU_MEMORY_SHARE = 0.5
#: On CPUs, a grid is cut into about this many chunks per core, so that workers that finish
#: early take the next (balance), and the largest are handed out first.
CHUNKS_PER_WORKER = 4
#: A CPU chunk is at least this many times its fixed cost (the Python and kernel launches of its
#: steps, which do not grow with its runs), so that cutting it finer does not waste the cores.
MIN_WORK_OVER_FIXED = 4.0

#: The axes that do not change a run's stream, in the grid's order.
# A stream's runs are the same in every stream (its chunk holds them all): so an axis that
# applies to some runs only depends on an axis of the optimiser's, and is one.
assert all(axis in OPTIMIZER_AXES and condition in OPTIMIZER_AXES for axis, (condition, *_) in APPLIES_ONLY.items())
#: An average_from of None (the last iterate) in a chunk's column of ints.
NO_AVERAGE_EPOCH = -1


@dataclass
class Chunk:
    """Runs as columns, all of one (num_train, batch_size) and the grid's settings.

    ``lr, loss, sigma, reduction, noise, noise_kind, replicate, seed, index`` are arrays of one
    value per run, and so are the optimiser's axes (``average_from`` as ints, NO_AVERAGE_EPOCH
    for None); ``key`` holds the runs' uint64 keys (hex in :attr:`Run.key`).
    """

    num_train: int
    batch_size: int
    num_val: int
    w: tuple[float, ...]
    b: float
    stream: str
    base_seed: int
    lr: np.ndarray
    loss: np.ndarray
    sigma: np.ndarray
    reduction: np.ndarray
    noise: np.ndarray
    noise_kind: np.ndarray
    replicate: np.ndarray
    seed: np.ndarray
    index: np.ndarray
    key: np.ndarray
    lr_decay: np.ndarray | None = None
    momentum: np.ndarray | None = None
    weight_decay: np.ndarray | None = None
    average_from: np.ndarray | None = None
    drop_last: bool = False

    def __post_init__(self) -> None:
        # A chunk made without the optimiser's axes is plain SGD: their defaults, one per run.
        n = len(self.index)
        for axis, default in OPTIMIZER_DEFAULTS.items():
            if getattr(self, axis) is None:
                value = NO_AVERAGE_EPOCH if axis == "average_from" else default
                setattr(self, axis, np.full(n, value, dtype=np.int64 if axis == "average_from" else np.float64))

    @property
    def num_inputs(self) -> int:
        return len(self.w)

    @property
    def steps_per_epoch(self) -> int:
        """SGD steps an epoch: every minibatch, or the full ones with drop_last."""
        return steps_per_epoch(self.num_train, self.batch_size, self.drop_last)

    @property
    def plain(self) -> bool:
        """Whether every run is plain SGD (the optimiser's axes at their defaults)."""
        # __post_init__ fills every optimiser axis given as None
        assert self.lr_decay is not None and self.momentum is not None and self.weight_decay is not None
        assert self.average_from is not None
        return not (
            self.lr_decay.any()
            or self.momentum.any()
            or self.weight_decay.any()
            or (self.average_from != NO_AVERAGE_EPOCH).any()
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Run:
        """The i-th run, as a :class:`~study.grid.Run` (a chunk reads as a sequence of runs)."""
        return self.take(slice(i, i + 1 if i != -1 else None)).runs()[0]

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs())

    def column(self, name: str) -> np.ndarray:
        """One value per run of any run axis, a per-chunk one (num_train, num_inputs, batch_size)
        repeated."""
        value = getattr(self, name)
        return value if isinstance(value, np.ndarray) else np.full(len(self), value)

    def runs(self) -> list[Run]:
        """The runs as :class:`~study.grid.Run` objects (for the reference engine and messages)."""
        cols = {a: self.column(a).tolist() for a in (*RUN_AXES, "replicate", "index")}
        cols["average_from"] = [None if v == NO_AVERAGE_EPOCH else v for v in cols["average_from"]]
        return [
            Run(
                **{a: cols[a][i] for a in cols},
                w=self.w,
                b=self.b,
                num_val=self.num_val,
                base_seed=self.base_seed,
                stream=self.stream,
            )
            for i in range(len(self))
        ]

    def take(self, rows: np.ndarray | slice) -> Chunk:
        """The chunk of the given rows."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in out.items():
            if isinstance(value, np.ndarray):
                out[name] = value[rows]
        return Chunk(**out)

    @classmethod
    def from_runs(cls, runs: Sequence[Run]) -> Chunk:
        """A chunk of Run objects (which must share num_train, batch_size and the settings)."""
        if not runs:
            raise ValueError("A chunk needs at least one run.")
        shared = {(r.num_train, r.batch_size, r.drop_last, r.num_val, r.w, r.b, r.stream, r.base_seed) for r in runs}
        if len(shared) > 1:
            raise ValueError(
                "The runs of a chunk must share num_train, batch_size, drop_last, num_val, w, b and the stream."
            )
        r0 = runs[0]

        def col(name: str, dtype=None) -> np.ndarray:
            return np.array([getattr(r, name) for r in runs], dtype=dtype)

        return cls(
            num_train=r0.num_train,
            batch_size=r0.batch_size,
            num_val=r0.num_val,
            w=tuple(r0.w),
            b=r0.b,
            stream=r0.stream,
            base_seed=r0.base_seed,
            lr=col("lr", np.float64),
            loss=col("loss", object),
            sigma=col("sigma", np.float64),
            reduction=col("reduction", object),
            noise=col("noise", np.float64),
            noise_kind=col("noise_kind", object),
            replicate=col("replicate", np.int64),
            seed=col("seed", np.int64),
            index=col("index", np.int64),
            key=np.array([int(r.key, 16) for r in runs], dtype=np.uint64),
            lr_decay=col("lr_decay", np.float64),
            momentum=col("momentum", np.float64),
            weight_decay=col("weight_decay", np.float64),
            average_from=np.array(
                [NO_AVERAGE_EPOCH if r.average_from is None else r.average_from for r in runs], dtype=np.int64
            ),
            drop_last=bool(r0.drop_last),
        )

    def streams(self) -> tuple[np.ndarray, np.ndarray]:
        """(seeds of the distinct streams, in order of first appearance; each run's stream number)."""
        seeds, first, inverse = np.unique(self.seed, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return seeds[order], rank[inverse.reshape(-1)]


def steps_per_epoch(num_train: int, batch_size: int, drop_last: bool = False) -> int:
    """SGD steps an epoch: ⌈n / B⌉, or ⌊n / B⌋ when the ragged last minibatch is dropped."""
    return num_train // batch_size if drop_last else math.ceil(num_train / batch_size)


@dataclass(frozen=True)
class ChunkSpec:
    """Streams [start, stop) of one (num_train, num_inputs, batch_size, drop_last) group, in the
    group's stream order."""

    num_train_i: int
    batch_size_i: int
    start: int
    stop: int
    runs: int
    drop_last_i: int = 0
    num_inputs_i: int = 0


class Plan:
    """A grid's runs as chunks of whole streams.

    Parameters
    ----------
    grid : Grid
    chunk_runs : callable (num_train, batch_size, total_runs, num_inputs) -> int
        The most runs a chunk of that group may hold (rounded down to whole streams, at least
        one stream).
    """

    def __init__(self, grid: Grid, chunk_runs) -> None:
        self.grid = grid
        self.optim_shape = tuple(len(getattr(grid, a)) for a in OPTIMIZER_AXES)
        mask = grid.cell_mask()
        # The optimiser's cells that are runs (an axis that does not apply is a run at its first
        # value only: Grid.cell_mask), the same for every stream.
        self.optim_cells = np.flatnonzero(_optim_mask(grid, mask))
        self.runs_per_stream = len(self.optim_cells)
        self.stream_shape = (len(grid.noise), len(grid.noise_kind), grid.replicates)
        self.streams_per_group = math.prod(self.stream_shape)
        self.shape = tuple(len(getattr(grid, a)) for a in RUN_AXES) + (grid.replicates,)
        # A run's index is its position among the grid's runs; with cells left out, the cells'
        # positions in the product (and each cell's rank among the runs' cells) map it.
        self.cells = None if mask is None else np.flatnonzero(mask)
        self.cell_rank = None if mask is None else np.cumsum(mask.ravel()) - 1
        self.n_runs = (math.prod(self.shape[:-1]) if self.cells is None else len(self.cells)) * grid.replicates
        specs = []
        assert grid.num_inputs is not None  # Grid.__post_init__ fills num_inputs (None: one, len(w))
        for i, num_train in enumerate(grid.num_train):
            for h, num_inputs in enumerate(grid.num_inputs):
                for j, batch_size in enumerate(grid.batch_size):
                    cap = int(chunk_runs(num_train, batch_size, self.n_runs, num_inputs))
                    per = max(1, cap // self.runs_per_stream)
                    for k in range(len(grid.drop_last)):
                        for start in range(0, self.streams_per_group, per):
                            stop = min(start + per, self.streams_per_group)
                            specs.append(ChunkSpec(i, j, start, stop, (stop - start) * self.runs_per_stream, k, h))
        self.specs = specs

    def __len__(self) -> int:
        return len(self.specs)

    def chunk(self, spec: ChunkSpec) -> Chunk:
        """The runs of one chunk, as columns."""
        g = self.grid
        s = np.arange(spec.start, spec.stop)
        i_noise, i_kind, rep = np.unravel_index(s, self.stream_shape)
        L = self.runs_per_stream
        # Runs in the grid's order: the optimiser's axes (OPTIMIZER_AXES) outer, streams inner. A
        # chunk's rows then land in L contiguous blocks of the table.
        optim = [np.repeat(a, len(s)) for a in np.unravel_index(self.optim_cells, self.optim_shape)]
        i_noise, i_kind, rep = (np.tile(a, L) for a in (i_noise, i_kind, rep))
        n = len(rep)
        i_nt, i_ni, i_bs, i_dl = (
            np.full(n, i) for i in (spec.num_train_i, spec.num_inputs_i, spec.batch_size_i, spec.drop_last_i)
        )
        full = np.ravel_multi_index((i_nt, i_ni, *optim, i_bs, i_dl, i_noise, i_kind, rep), self.shape)
        cols = self.runs_at(self._index_of(full))
        assert g.num_inputs is not None  # Grid.__post_init__ fills num_inputs (None: one, len(w))
        return Chunk(
            num_train=g.num_train[spec.num_train_i],
            batch_size=g.batch_size[spec.batch_size_i],
            num_val=g.num_val,
            w=g.w_of(g.num_inputs[spec.num_inputs_i]),
            b=g.b,
            stream=g.stream,
            base_seed=g.seed,
            drop_last=g.drop_last[spec.drop_last_i],
            **{k: cols[k] for k in (*OPTIMIZER_AXES, "noise", "noise_kind", "replicate", "seed", "index", "key")},
        )

    def _index_of(self, full: np.ndarray) -> np.ndarray:
        """Runs' indices from their positions in the product of the axes (theirs: runs)."""
        if self.cells is None:
            return full
        assert self.cell_rank is not None  # made with self.cells, from the same mask
        R = self.grid.replicates
        return self.cell_rank[full // R] * R + full % R

    def _full_of(self, index: np.ndarray) -> np.ndarray:
        if self.cells is None:
            return index
        R = self.grid.replicates
        return self.cells[index // R] * R + index % R

    def runs_at(self, index: np.ndarray) -> dict[str, Any]:
        """The runs at the given positions of the grid's order, as columns: every run axis (the
        string ones as object arrays, and as their positions among the grid's values in
        ``codes``), ``replicate``, ``seed``, ``index`` and ``key``; and ``applies``, per axis of
        APPLIES_ONLY, whether it applies to each run (where not, its column holds the axis's
        first value, which training ignores)."""
        g = self.grid
        index = np.asarray(index, dtype=np.int64)
        # The grid's order: RUN_AXES (num_train, num_inputs, the optimiser's axes, batch_size,
        # noise, noise_kind), then the replicate.
        at = dict(zip((*RUN_AXES, "replicate"), np.unravel_index(self._full_of(index), self.shape)))
        i_nt, i_bs, i_noise, i_kind, rep = (
            at[a] for a in ("num_train", "batch_size", "noise", "noise_kind", "replicate")
        )
        n = len(index)
        seed = np.empty(n, dtype=np.int64)
        key = np.empty(n, dtype=np.uint64)
        # Seeds and keys per cell, vectorized over its replicates: cells are few, replicates many.
        stream_cell = np.ravel_multi_index(
            (i_nt, i_bs, i_noise, i_kind), (len(g.num_train), len(g.batch_size), *self.stream_shape[:2])
        )
        for _, rows in _groups(stream_cell):
            r0 = rows[0]
            settings = dict(
                num_train=g.num_train[i_nt[r0]],
                num_val=g.num_val,
                noise=float(g.noise[i_noise[r0]]),
                noise_kind=g.noise_kind[i_kind[r0]],
                batch_size=g.batch_size[i_bs[r0]],
            )
            seed[rows] = stream_seeds(settings, g.seed, rep[rows])
        run_cell = np.ravel_multi_index(tuple(at[a] for a in RUN_AXES), self.shape[:-1])
        for _, rows in _groups(run_cell):
            r0 = rows[0]
            cell = {a: getattr(g, a)[at[a][r0]] for a in RUN_AXES}
            cell.update(w=list(g.w_of(cell["num_inputs"])), b=g.b, num_val=g.num_val, base_seed=g.seed, stream=g.stream)
            key[rows] = run_keys(key_cell(cell), rep[rows])
        average = np.array([NO_AVERAGE_EPOCH if v is None else v for v in g.average_from], dtype=np.int64)
        return dict(
            num_train=np.asarray(g.num_train, dtype=np.int64)[i_nt],
            num_inputs=np.asarray(g.num_inputs, dtype=np.int64)[at["num_inputs"]],
            lr=np.asarray(g.lr, dtype=np.float64)[at["lr"]],
            loss=np.asarray(g.loss, dtype=object)[at["loss"]],
            sigma=np.asarray(g.sigma, dtype=np.float64)[at["sigma"]],
            reduction=np.asarray(g.reduction, dtype=object)[at["reduction"]],
            lr_decay=np.asarray(g.lr_decay, dtype=np.float64)[at["lr_decay"]],
            momentum=np.asarray(g.momentum, dtype=np.float64)[at["momentum"]],
            weight_decay=np.asarray(g.weight_decay, dtype=np.float64)[at["weight_decay"]],
            average_from=average[at["average_from"]],
            batch_size=np.asarray(g.batch_size, dtype=np.int64)[i_bs],
            drop_last=np.asarray(g.drop_last, dtype=bool)[at["drop_last"]],
            noise=np.asarray(g.noise, dtype=np.float64)[i_noise],
            noise_kind=np.asarray(g.noise_kind, dtype=object)[i_kind],
            replicate=rep.astype(np.int64),
            seed=seed,
            index=index,
            key=key,
            codes={
                "loss": at["loss"],
                "reduction": at["reduction"],
                "noise_kind": i_kind,
                "average_from": at["average_from"],
            },
            applies={
                axis: np.array([applies(axis, {condition: v}) for v in getattr(g, condition)], dtype=bool)[
                    at[condition]
                ]
                for axis, (condition, *_) in APPLIES_ONLY.items()
            },
        )

    def chunks(self) -> Iterator[Chunk]:
        for spec in self.specs:
            yield self.chunk(spec)

    def group_runs(self) -> int:
        """Runs of one (num_train, num_inputs, batch_size, drop_last) group."""
        return self.runs_per_stream * self.streams_per_group

    def steps(self, spec: ChunkSpec) -> int:
        """The SGD steps each run of a chunk takes: max_epoch x ceil(num_train / batch_size)."""
        g = self.grid
        return g.max_epoch * steps_per_epoch(
            g.num_train[spec.num_train_i], g.batch_size[spec.batch_size_i], g.drop_last[spec.drop_last_i]
        )

    def seconds(self, spec: ChunkSpec, seconds: Callable[..., float], runs: int | None = None) -> float:
        """A chunk's estimated one-core seconds, ``seconds(num_train, batch_size, runs,
        max_epoch, num_val)`` (engine.estimated_seconds), without making the chunk; of ``runs``
        of its runs where given (those a store lacks), else of them all."""
        g = self.grid
        return seconds(
            g.num_train[spec.num_train_i],
            g.batch_size[spec.batch_size_i],
            spec.runs if runs is None else runs,
            g.max_epoch,
            g.num_val,
        )


def _groups(labels: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(label, the positions holding it) for each distinct label, in one sort."""
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    for rows in np.split(order, cuts):
        if len(rows):
            yield int(labels[rows[0]]), rows


def chunk_id(chunk: Chunk, checkpoints: Sequence[int], engine: str, schema: int) -> str:
    """The name of a chunk's saved results: a hash of the schema, the engine, the stream, the
    checkpoints and its runs' keys, so that a file of another spec, engine, stream or schema is
    never taken for this chunk's."""
    return keys_id(chunk.key, chunk.stream, checkpoints, engine, schema)


def keys_id(keys: np.ndarray, stream: str, checkpoints: Sequence[int], engine: str, schema: int) -> str:
    """The hash behind :func:`chunk_id`, of runs given by their keys (a stored segment's name)."""
    head = repr((schema, engine, stream, list(checkpoints), len(keys))).encode()
    return hashlib.sha256(head + np.ascontiguousarray(keys, dtype="<u8").tobytes()).hexdigest()[:32]


def _optim_mask(grid: Grid, mask: np.ndarray | None = None) -> np.ndarray:
    """Which cells of the optimiser's axes are runs: ``mask`` (Grid.cell_mask, made here where
    not given) on those axes alone."""
    mask = grid.cell_mask() if mask is None else mask
    if mask is None:
        return np.ones(tuple(len(getattr(grid, a)) for a in OPTIMIZER_AXES), dtype=bool)
    at = tuple(slice(None) if a in OPTIMIZER_AXES else 0 for a in RUN_AXES)
    return mask[at]


def _group_runs(grid: Grid) -> int:
    """Runs of one (num_train, num_inputs, batch_size) group."""
    per_stream = int(_optim_mask(grid).sum())
    return per_stream * math.prod(len(getattr(grid, a)) for a in ("drop_last", "noise", "noise_kind")) * grid.replicates


def grid_seconds(grid: Grid, seconds: Callable[..., float]) -> float:
    """Estimated one-core seconds of a whole grid, chunk overheads aside: ``seconds(num_train,
    batch_size, runs, max_epoch, num_val)`` per (num_train, batch_size) group."""
    runs = _group_runs(grid)
    assert grid.num_inputs is not None  # Grid.__post_init__ fills num_inputs (None: one, len(w))
    return len(grid.num_inputs) * sum(
        seconds(n, bs, runs, grid.max_epoch, grid.num_val) for n in grid.num_train for bs in grid.batch_size
    )


def chunk_cap(
    grid: Grid,
    *,
    engine: str,
    budget: int,
    cores: int,
    chunk_size: int | None,
    max_runs: Callable[..., int],
    seconds: Callable[..., float],
) -> Callable[[int, int, int], int]:
    """The most runs a chunk of each (num_train, batch_size) may hold.

    The memory ``budget`` bounds every chunk (``max_runs(num_train, num_val, d, budget,
    runs_per_stream)``), and ``chunk_size`` when given. On CPUs (``cores`` > 0) a chunk also
    aims at 1 / (CHUNKS_PER_WORKER x cores) of the grid's work, but at least MIN_WORK_OVER_FIXED
    times its fixed cost; on a GPU (``cores`` = 0) it is as large as memory allows.
    """
    per_stream = int(_optim_mask(grid).sum())
    total = grid_seconds(grid, seconds)

    def cap(num_train: int, batch_size: int, _runs: int, num_inputs: int | None = None) -> int:
        assert grid.num_inputs is not None  # Grid.__post_init__ fills num_inputs (None: one, len(w))
        d = grid.num_inputs[0] if num_inputs is None else num_inputs
        limit = max_runs(num_train, grid.num_val, d, budget, per_stream)
        if engine == "reference":
            limit = min(limit, REFERENCE_CHUNK_RUNS)
        elif cores > 0:
            fixed = seconds(num_train, batch_size, 0, grid.max_epoch, grid.num_val)
            per_run = seconds(num_train, batch_size, 1, grid.max_epoch, grid.num_val) - fixed
            target = max(total / (CHUNKS_PER_WORKER * cores), MIN_WORK_OVER_FIXED * fixed)
            limit = min(limit, max(1, int(target / per_run)))
        if chunk_size is not None:
            limit = min(limit, chunk_size)
        return limit

    return cap
