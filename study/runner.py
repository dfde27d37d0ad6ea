"""run_grid: a grid's runs, found in the store or trained on the available devices, as one table.

The modules it drives follow a run's path:

- planning (study.plan): the grid as arrays, cut into chunks of whole streams of one
  (num_train, batch_size), sized to their device; a chunk is made when it is handed out, so a
  grid of millions of runs never exists as Python objects;
- the run-keyed store (study.store): finished runs under their keys, in ``OUT.store/`` beside
  the output; a rerun of the same, a grown or a changed grid computes only the runs it lacks;
- local dispatch (study.dispatch): joblib workers on this machine, one device each;
- Dask dispatch (study.cluster): the chunks on a Dask cluster, each bounded in time.

Every run is a pure function of its key, so the table does not depend on the number of
workers, the chunking, the backend, the order in which chunks finish, or which runs an earlier
call left in the store. It is assembled in the grid's order from the store, block by block, so
that a table larger than memory is written holding one block (``frame=False``).

Failures: a chunk that raises, or whose worker dies under it, is reported (a ChunkFailure: its
runs, the grid cells they span, the reason); the other chunks go on and are kept. run_grid then
raises ChunksFailed, after writing the runs that finished as ``NAME.partial.csv``; a rerun
computes only the runs that are missing.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import os
import platform
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import torch

from . import __version__, pace
from . import engine as engines
from ._checks import check_choice, check_output, check_real, fail
from .cluster import check_dask_installed, dask_client, dask_results
from .dispatch import Task, bundle, local_backend, local_results, start_seconds, worker_count
from .errors import ChunkFailure, ChunksFailed, OutputBusy
from .grid import Grid
from .options import DEFAULT, Options
from .plan import GPU_MEMORY_SHARE, Chunk, Plan, chunk_cap, grid_seconds, keys_id
from .plan import chunk_id as _chunk_id
from .schema import (
    COORDINATES,
    SCHEMA_VERSION,
    feature_columns,
    metric_names,
    write_json,
    write_table,
    write_table_blocks,
)
from .store import SUFFIX as STORE_SUFFIX
from .store import RunStore, table_blocks, table_frame
from .vocabulary import BACKENDS, DEFAULT_CHUNK_TIMEOUT, ENGINE_REVISIONS, ENGINES, RUN_AXES

__all__ = ["run_grid"]

#: ``device="auto"`` takes the GPU for the batched engine with the counter stream when the grid
#: is estimated at more than this many one-core seconds: below it, starting CUDA (a second or
#: two) costs more than the GPU saves (measured, see docs/performance.md).
AUTO_GPU_MIN_SECONDS = 4.0
_WHERE = "parameter of run_grid"


def plan_grid(
    grid: Grid,
    chunk_size: int | None = None,
    devices: Sequence[str] = ("cpu",),
    engine: str = "batched",
    cores: int | None = None,
    options: Options = DEFAULT,
) -> Plan:
    """The grid cut into chunks sized to ``devices`` (see study.plan.chunk_cap)."""
    if devices[0].startswith("cuda"):
        free = min(torch.cuda.mem_get_info(torch.device(d))[0] for d in devices)
        budget, cores = int(free * GPU_MEMORY_SHARE), 0
    else:
        budget, cores = options.chunk_memory_budget, cores or joblib.cpu_count()
    cap = chunk_cap(
        grid,
        engine=engine,
        budget=budget,
        cores=cores,
        chunk_size=chunk_size,
        max_runs=engines.max_chunk_runs,
        seconds=engines.estimated_seconds,
    )
    return Plan(grid, cap)


def plan_chunks(grid: Grid, chunk_size: int | None = None, **kw: Any) -> list[Chunk]:
    """Every chunk of the grid, made at once (for small grids and tests; run_grid makes each
    when it hands it out)."""
    plan = plan_grid(grid, chunk_size, **kw)
    return list(plan.chunks())


def chunk_id(chunk: Chunk, checkpoints: Sequence[int], engine: str) -> str:
    return _chunk_id(chunk, checkpoints, engine, SCHEMA_VERSION)


def resolve_devices(device: str, engine: str = "batched", grid: Grid | None = None) -> list[str]:
    """The devices to run on. ``auto``: the CPU for the reference engine; for the batched engine,
    every CUDA GPU where there are any and the GPU is the faster, that is with the counter stream
    (the torch stream draws on the CPU) and a grid of more than AUTO_GPU_MIN_SECONDS of work;
    else the CPU. ``cpu``, ``cuda`` (all GPUs) and ``cuda:N`` name devices directly."""
    if not isinstance(device, str):
        fail("device", _WHERE, "'auto', 'cpu', 'cuda' or 'cuda:N'", device)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        if (
            engine != "batched"
            or gpus == 0
            or (
                grid is not None
                and (grid.stream != "counter" or grid_seconds(grid, engines.estimated_seconds) < AUTO_GPU_MIN_SECONDS)
            )
        ):
            return ["cpu"]
        return [f"cuda:{i}" for i in range(gpus)]
    if device == "cpu":
        return ["cpu"]
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if gpus == 0:
            fail("device", _WHERE, "a device that exists (this machine has no CUDA GPU)", device)
        if device == "cuda":
            return [f"cuda:{i}" for i in range(gpus)]
        if int(device[5:]) >= gpus:
            fail("device", _WHERE, f"a CUDA device in 0..{gpus - 1}", device)
        return [device]
    fail("device", _WHERE, "'auto', 'cpu', 'cuda' or 'cuda:N'", device)


#: Seconds per SGD step of a GPU chunk (its kernel launches, about 8 a step) and per run, fitted
#: to one H200's measurements of the W mix (100k runs: 1.5 s; 1M runs: 6.2 s).
GPU_STEP_S, GPU_RUN_S = 150e-6, 5e-6
#: Seconds per model step of the reference loop (exercise 5 on one core of this project's machine).
REFERENCE_STEP_S = 230e-6
#: Bytes per row of a results CSV, about 13 for each of its 27 columns (d = 2), 3 columns more per feature.
CSV_BYTES_PER_COLUMN = 13
#: The same for Parquet (measured: 100,056 runs of the W mix, 600,336 rows, 50 MB).
PARQUET_BYTES_PER_COLUMN = 3.1


def plan_summary(
    grid: Grid,
    n_jobs: int = -1,
    device: str = "auto",
    engine: str = "batched",
    backend: str = "auto",
    chunk_size: int | None = None,
    out: str | Path | None = None,
) -> str:
    """One line on what run_grid would do: the runs, rows and chunks, the devices and workers,
    an estimate of the time (of training every run: "at most" where the output's store holds
    runs, which cost nothing) and the size of the table (Parquet when ``out`` ends in .parquet,
    else CSV). The estimates are rough (the models behind them were fitted on this project's
    machine and one H200; see docs/performance.md)."""
    devices = resolve_devices(device, engine, grid)
    plan = plan_grid(grid, chunk_size, devices, engine)
    rows = plan.n_runs * len(grid.checkpoints)
    work = [(spec, spec.runs, plan.seconds(spec, engines.estimated_seconds)) for spec in plan.specs]
    paced = ""
    if backend == "dask":
        where, seconds = "a Dask cluster", None
    else:
        backend = local_backend(backend, grid, engine, devices)
        start_s = start_seconds(backend)
        workers = worker_count(n_jobs, devices, [w for _, _, w in work], start_s)
        # The models' estimate, scaled by how far off they were on this machine before.
        scale, measured = pace.factor(pace.kind(engine, devices))
        seconds = _model_seconds(plan, work, devices, engine, workers, start_s) * scale
        if measured:
            runs = f"{measured} run{'s' if measured > 1 else ''} of {pace.MIN_SECONDS:g} s or more"
            paced = f" (the models × {scale:.2g}: this machine's pace, from its last {runs})"
        kind = " (threads)" if backend == "threading" and workers > 1 else ""
        where = f"{', '.join(devices)}, {workers} worker{'s' if workers > 1 else ''}{kind}"
    parquet = out is not None and Path(out).suffix.lower() == ".parquet"
    size = table_file_bytes(grid, parquet=parquet)
    estimate = "time unknown" if seconds is None else f"about {_duration(max(seconds, 1))}{paced}"
    store = store_path(Path(out)) if out is not None else None
    if seconds is not None and store is not None and any(store.glob(f"*{STORE_SUFFIX}")):
        # Which runs it holds is known only once its files are read (a pass over them): run_grid's
        # progress lines then count only what is left.
        estimate = f"at most {estimate[len('about ') :]} ({store.name} holds earlier runs, which are not trained again)"
    return (
        f"{grid.name}: {plan.n_runs:,} runs, {rows:,} rows in {len(plan.specs):,} chunks on {where}; "
        f"{estimate}; the {'Parquet file' if parquet else 'CSV'} about {_size(size)}"
    )


def _model_seconds(
    plan: Plan, work: list[tuple[Any, int, float]], devices: list[str], engine: str, workers: int, start_s: float
) -> float:
    """The cost models' estimate of the wall time of training ``work`` (chunk spec, runs to
    train, its estimated seconds on one CPU worker) on ``workers`` workers, each started in
    ``start_s`` (study.dispatch.start_seconds)."""
    if not work:
        return 0.0
    if engine == "reference":
        return sum(runs * plan.steps(spec) for spec, runs, _ in work) * REFERENCE_STEP_S / workers
    if devices[0].startswith("cuda"):
        return sum(plan.steps(spec) * GPU_STEP_S + runs * GPU_RUN_S for spec, runs, _ in work) / len(devices)
    seconds = [w for _, _, w in work]
    return max(sum(seconds) / workers, max(seconds)) + (start_s if workers > 1 else 0.0)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


_ADDRESS = re.compile(r"(?:(tcp|tls)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def _check_scheduler(scheduler: Any, backend: str) -> str | None:
    """The scheduler as Dask's Client takes it: 'tcp://HOST:PORT' (a bare HOST:PORT gets tcp://),
    'tls://HOST:PORT', or the path of a scheduler file (``dask scheduler --scheduler-file``)."""
    if scheduler is None:
        return None
    if backend != "dask":
        fail("scheduler", _WHERE, "None unless backend is 'dask'", scheduler)
    if isinstance(scheduler, os.PathLike):
        scheduler = os.fspath(scheduler)
    allowed = "'tcp://HOST:PORT', 'HOST:PORT' or an existing scheduler file ending in .json"
    if not isinstance(scheduler, str):
        fail("scheduler", _WHERE, allowed, scheduler)
    if scheduler.endswith(".json"):
        try:
            exists = Path(scheduler).is_file()
        except (OSError, ValueError):
            exists = False
        if not exists:
            fail("scheduler", _WHERE, allowed, scheduler)
        return scheduler
    match = _ADDRESS.fullmatch(scheduler)
    if match is None or not 1 <= int(match.group(3)) <= 65535:
        fail("scheduler", _WHERE, allowed, scheduler)
    return scheduler if match.group(1) else f"tcp://{scheduler}"


def run_grid(
    grid: Grid,
    *,
    out: str | Path | None = None,
    n_jobs: int = -1,
    device: str = "auto",
    engine: str = "batched",
    backend: str = "auto",
    resume: bool = True,
    progress: bool = True,
    chunk_size: int | None = None,
    scheduler: str | None = None,
    chunk_timeout: float | None = None,
    frame: bool = True,
    options: Options | None = None,
    force: bool = False,
) -> pd.DataFrame | None:
    """Train every run of a grid and return the tidy results table.

    Parameters
    ----------
    grid : Grid
    out : path, optional
        Where to write the table, ``.csv`` or ``.parquet`` (and ``NAME.meta.json`` beside it).
        With a path, finished runs are kept under their keys in ``OUT.store/`` as they finish,
        and stay there: a rerun of the same grid, or of a grown or changed one, on the same
        output computes only the runs the store lacks (see study.store).
    n_jobs : int, default=-1
        Workers; -1 means one per GPU on CUDA, and on CPUs one per core when the grid is
        large enough to pay for starting them (a small grid runs in this process). On CPUs
        never more than one per core: each trains with one torch thread. With
        ``backend="dask"`` and a scheduler: at most this many chunks at once (-1: one per
        thread of the cluster's workers).
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        ``auto``: the faster device for the engine and grid (see :func:`resolve_devices`).
    engine : {"batched", "reference"}, default="batched"
        ``reference`` trains one run at a time with :class:`~study.train.Trainer` (CPU only).
    backend : {"auto", "loky", "threading", "sequential", "dask"}, default="auto"
        A joblib backend, or ``dask``: the chunks go to a Dask cluster, the one at
        ``scheduler``, or without one a LocalCluster of ``n_jobs`` single-threaded worker
        processes on 127.0.0.1 (needs the ``dask`` extra). ``auto``: threads in this process
        where every chunk trains in compiled loops, which release the GIL (the batched
        engine's plain SGD on the CPU with the counter stream, and Numba), so that no worker
        process is started; loky's worker processes elsewhere (see
        :func:`study.dispatch.local_backend`). The table's sidecar names the one used.
    resume : bool, default=True
        Reuse the runs kept in ``OUT.store/`` by earlier calls; False empties the store first.
    progress : bool, default=True
        Show a progress bar (only when stderr is a terminal).
    chunk_size : int, optional
        At most this many runs per chunk (rounded down to whole streams, at least one). By
        default chunks are sized to their device: on a GPU a share of its free memory, on CPUs
        the memory budget and a share of the grid's work (see study.plan).
    scheduler : str, optional
        With ``backend="dask"``: the scheduler's address, ``tcp://HOST:PORT`` (or
        ``HOST:PORT``), or the scheduler file a ``dask scheduler --scheduler-file`` wrote.
    chunk_timeout : float, optional
        With ``backend="dask"``: seconds one attempt of a chunk may take, from the moment it
        is handed to the cluster (default DEFAULT_CHUNK_TIMEOUT, one hour). A chunk whose
        workers die under it (Dask's KilledWorker) is tried once more, alone on the cluster,
        after the others; so no chunk holds a run up for more than twice this.
    frame : bool, default=True
        Return the table as a DataFrame. With ``frame=False`` (and ``out``) the table is
        written block by block from the store and never held whole in memory, and None is
        returned: for tables larger than memory (a grid whose table would take more than
        half of the memory available is refused with ``frame=True``).
    options : study.options.Options, optional
        The engine's and dispatch's settings (memory budgets, CUDA graphs, bundles), handed to
        every chunk on every worker, loky's and Dask's; default: ``Options()``.
    force : bool, default=False
        Start even where the disk holding ``out`` lacks the room the table and its store are
        estimated to take (refused otherwise, before any work, with both numbers).

    Returns
    -------
    DataFrame or None
        One row per run per checkpoint, in the grid's order; columns as in
        :mod:`study.schema`. None with ``frame=False``.

    Raises
    ------
    ChunksFailed
        When some chunks gave no rows. Every other chunk is kept (with ``out``: in
        ``OUT.store/``, and written as ``NAME.partial.csv``); a rerun computes only the
        runs that are missing.

    Examples
    --------
    >>> df = run_grid(Grid(num_train=[20, 50], lr=[0.03, 0.1], epoch=[1, 3]), n_jobs=1, progress=False)
    >>> len(df)  # 4 runs x (epoch 0, 1, 3)
    12
    """
    if not isinstance(grid, Grid):
        fail("grid", _WHERE, "a Grid", grid)
    if options is None:
        options = DEFAULT
    elif not isinstance(options, Options):
        fail("options", _WHERE, "a study.options.Options, or None for the defaults", options)
    grid = grid.checked()  # a list of it changed in place since it was made is refused here
    check_choice(engine, "engine", _WHERE, ENGINES)
    check_choice(backend, "backend", _WHERE, BACKENDS)
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or (n_jobs < 1 and n_jobs != -1):
        fail("n_jobs", _WHERE, "a positive integer or -1 (all cores)", n_jobs)
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        fail("chunk_size", _WHERE, "a positive integer or None", chunk_size)
    scheduler = _check_scheduler(scheduler, backend)
    if chunk_timeout is not None:
        if backend != "dask":
            fail(
                "chunk_timeout",
                _WHERE,
                "None unless backend is 'dask' (the only backend that bounds a chunk)",
                chunk_timeout,
            )
        chunk_timeout = check_real(chunk_timeout, "chunk_timeout", _WHERE)
    if backend == "dask":
        check_dask_installed()
    devices = resolve_devices(device, engine, grid)
    if engine == "reference" and devices[0] != "cpu":
        fail("device", _WHERE, "'cpu' or 'auto' when engine is 'reference' (it trains on the CPU)", device)
    if backend == "dask" and device == "auto" and engine == "batched" and grid.stream == "counter":
        # The cluster's workers, not this process, know their GPUs: each resolves "auto" itself
        # (study.dispatch.local_device). Chunks are then sized for CPUs, which any worker can hold.
        devices = ["auto"]
    out = check_output(out) if out is not None else None
    if not isinstance(force, bool):
        fail("force", _WHERE, "True or False", force)
    if out is not None and not force:
        need, free = output_bytes(grid, out), _free_bytes(out)
        if free is not None and need > free:
            fail(
                "out",
                _WHERE,
                f"a path on a disk with room for the output: the table and its store would take about "
                f"{_size(need)}, and {_size(free)} is free there (force=True, or study run --force, starts anyway)",
                str(out),
            )
    if not isinstance(frame, bool):
        fail("frame", _WHERE, "True or False", frame)
    if not frame and out is None:
        fail("frame", _WHERE, "True unless out is given (the table must go somewhere)", frame)
    if frame:
        need, have = table_bytes(grid), _available_memory()
        if have is not None and need > have / 2:
            fail(
                "frame",
                _WHERE,
                f"False for this grid: its table would take about {_size(need)} in memory, and "
                f"{_size(have)} is available; give out='NAME.parquet' and frame=False to write it block by block",
                frame,
            )

    with _exclusive(out):
        return _execute(
            grid,
            out,
            n_jobs,
            devices,
            engine,
            backend,
            resume,
            progress,
            chunk_size,
            scheduler,
            chunk_timeout,
            frame,
            options,
        )


def table_bytes(grid: Grid) -> int:
    """The bytes of a grid's table as a DataFrame in memory (8 a value, 1 for a string axis)."""
    return grid.n_rows * 8 * table_columns(grid)


def table_columns(grid: Grid) -> int:
    """Columns of a grid's table: TABLE_COLUMNS, and two more for each feature past two with
    columns of its own (study.schema.feature_columns)."""
    assert grid.num_inputs is not None  # Grid.__post_init__ fills num_inputs (None: one, len(w))
    return TABLE_COLUMNS + 2 * (feature_columns(grid.num_inputs) - 2)


#: Columns of a table with two features (two more, w_hat_j and w_err_j, for each further one).
TABLE_COLUMNS = len(COORDINATES) + len(metric_names(2))


def table_file_bytes(grid: Grid, *, parquet: bool) -> float:
    """The bytes of a grid's table as a file, estimated: CSV or Parquet, by the bytes a value
    takes in each (measured)."""
    per_column = PARQUET_BYTES_PER_COLUMN if parquet else CSV_BYTES_PER_COLUMN
    return grid.n_rows * per_column * table_columns(grid)


def output_bytes(grid: Grid, out: Path) -> int:
    """The bytes a grid's output takes on disk, estimated: its table (:func:`table_file_bytes`)
    and its store (8 bytes a measured value)."""
    assert grid.num_inputs is not None  # Grid.__post_init__ fills num_inputs (None: one, len(w))
    measured = len(metric_names(feature_columns(grid.num_inputs)))
    return int(table_file_bytes(grid, parquet=out.suffix.lower() == ".parquet") + grid.n_rows * 8 * measured)


def _free_bytes(out: Path) -> int | None:
    """Bytes free on the disk that will hold ``out``, counting as free what an earlier output
    there (its table, its store) takes, which a rerun replaces or reuses; None where unknown."""
    import shutil

    folder = out.parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    for path in (out, *(store_path(out).glob("*") if store_path(out).is_dir() else ())):
        try:
            free += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return free


def _available_memory() -> int | None:
    """Bytes of memory available to this process (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


#: When stderr is not a terminal (a pipe, a log file, nohup), a progress line about this often,
#: for grids expected to take longer than that.
PROGRESS_EVERY_S = 30.0


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced, or closed
        return False


class _LineProgress:
    """Progress as lines on stderr, by the time elapsed (never by an estimate, which may be far
    off on another machine): a line every PROGRESS_EVERY_S seconds while the work goes on,
    from a timer thread (so that a long chunk does not silence them), and one at the end where
    any was printed. A grid done within PROGRESS_EVERY_S prints none. ``enabled``: progress
    was asked for."""

    def __init__(self, total: int, initial: int, name: str, enabled: bool, work: float = 0.0) -> None:
        self.total, self.done, self.name, self.enabled = total, initial, name, enabled
        self.work, self.work_done = work, 0.0  # estimated seconds of the runs to train, and of those trained
        self.started = time.monotonic()
        self.printed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def _line(self) -> None:
        with self._lock:
            elapsed = time.monotonic() - self.started
            # The time left from the share of the estimated work done, not of the runs: chunks
            # differ in cost by orders of magnitude (num_train), and the largest go first.
            left = ""
            if 0 < self.work_done < self.work and self.done < self.total:
                left = f", about {_duration(elapsed * (self.work - self.work_done) / self.work_done)} left"
            print(
                f"study: {self.name}: {self.done:,} of {self.total:,} runs ({100 * self.done / self.total:.0f}%), "
                f"{_duration(elapsed)}{left}",
                file=sys.stderr,
                flush=True,
            )
            self.printed = True

    def _tick(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            self._line()

    def update(self, n: int, work: float = 0.0) -> None:
        with self._lock:
            self.done += n
            self.work_done += work

    def __enter__(self) -> _LineProgress:
        if self.enabled:
            self._timer = threading.Thread(target=self._tick, name="study-progress", daemon=True)
            self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        if self.printed and exc[0] is None:
            self._line()


@contextlib.contextmanager
def _exclusive(out: Path | None) -> Iterator[None]:
    """Hold the output's lock (an flock on ``.NAME.lock`` beside it) while writing it: a second
    run_grid on the same output, in any process, is refused at once, naming the first, rather
    than mixing its chunks and temporary files with the first's. The lock file, and the folders
    made for it, are removed on the way out, so a run leaves only what it wrote."""
    if out is None:
        yield
        return
    import fcntl

    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_name(f".{out.name}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputBusy(
                f"another study run (pid {holder}) is writing {out}; wait for it to finish, or stop it "
                "(its finished chunks are kept) and run again"
            ) from None
        # Locked; but if the holder before us removed the file meanwhile, ours is a lock on a file
        # no one else will open: start again with the file at the path.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a process that opened it since starts again
        os.close(fd)
        for folder in made:  # the folders made for the lock, where the run left nothing in them
            with contextlib.suppress(OSError):
                folder.rmdir()


def store_path(out: Path) -> Path:
    """Where run_grid keeps the finished runs of an output: ``OUT.store/`` beside it."""
    return out.with_name(out.name + ".store")


def _missing_tasks(grid: Grid, plan: Plan, store: RunStore) -> tuple[list[Task], int]:
    """What the store lacks, chunk by chunk, as tasks numbered largest first (so that the last
    ones to finish are small: balance); and how many chunks the store holds whole. A chunk is
    made here, to look its runs up, only when the store holds any (a new grid is planned
    without making a chunk)."""
    tasks: list[Task] = []
    reused_chunks = 0
    assert grid.num_inputs is not None  # Grid.__post_init__ fills num_inputs (None: one, len(w))
    for spec in plan.specs:
        rows, missing = None, spec.runs
        if len(store):
            held = store.has(plan.chunk(spec).key)
            missing = int((~held).sum())
            if missing == 0:
                reused_chunks += 1
                continue
            if missing < spec.runs:
                rows = np.flatnonzero(~held)
        memory = engines.chunk_bytes(
            grid.num_train[spec.num_train_i],
            grid.num_val,
            grid.num_inputs[spec.num_inputs_i],
            missing,
            spec.stop - spec.start,
        )
        tasks.append(Task(0, spec, rows, missing, plan.seconds(spec, engines.estimated_seconds, missing), memory))
    tasks.sort(key=lambda t: t.seconds, reverse=True)
    return [Task(n, t.spec, t.rows, t.runs, t.seconds, t.memory) for n, t in enumerate(tasks)], reused_chunks


def _progress(name: str, n_runs: int, initial: int, progress: bool, seconds: float):
    """A tqdm bar on a terminal; elsewhere (a pipe, a log file, nohup) progress lines, or none
    with ``progress=False``."""
    if not progress or not _stderr_is_terminal():
        return _LineProgress(n_runs, initial, name, progress, seconds)
    # tqdm.auto only when a bar is shown: in a notebook without ipywidgets it warns on creation.
    from tqdm.auto import tqdm

    return tqdm(total=n_runs, initial=initial, unit="run", desc=name, smoothing=0.1)


def _segments(outcome: Any, reason: str | None, n: int) -> list:
    """Each of a job's ``n`` tasks' segment, or the reason it failed: a bundle gives a list, a
    chunk its segment, a failure (None) its reason for every task it held."""
    if isinstance(outcome, list):
        return outcome
    return [reason] * n if outcome is None else [outcome]


def _execute(
    grid: Grid,
    out: Path | None,
    n_jobs: int,
    devices: list[str],
    engine: str,
    backend: str,
    resume: bool,
    progress: bool,
    chunk_size: int | None,
    scheduler: str | None,
    chunk_timeout: float | None,
    frame: bool,
    options: Options = DEFAULT,
) -> pd.DataFrame | None:
    """run_grid's work, its arguments checked: plan, look up the store, dispatch what it lacks,
    keep it, assemble, write."""
    started = time.perf_counter()
    checkpoints = grid.checkpoints
    plan = plan_grid(grid, chunk_size, devices, engine, options=options)
    n_runs = plan.n_runs
    # With resume=False the store is emptied, but only once the cluster is reached (below): an
    # unreachable scheduler leaves no trace.
    store = RunStore(
        store_path(out) if out is not None else None,
        engine=engine,
        stream=grid.stream,
        checkpoints=checkpoints,
        read=resume,
    )
    for damage in store.damaged:  # repaired below, and said: a damaged disk is worth knowing of
        warnings.warn(f"{damage}; they are trained again", stacklevel=3)
    tasks, reused_chunks = _missing_tasks(grid, plan, store)
    to_compute = sum(t.runs for t in tasks)
    backend = local_backend(backend, grid, engine, devices, options)  # "auto" resolved
    workers = worker_count(n_jobs, devices, [t.seconds for t in tasks], start_seconds(backend))
    failed: list[tuple[int, ChunkFailure]] = []  # with the chunk's place in the plan
    position = {spec: i for i, spec in enumerate(plan.specs)}
    computed_runs = 0
    where_run: dict[str, Any] = {"backend": backend}
    threads = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, threads)  # chunks trained in this process set it to 1
        client, limit = None, None
        if (
            tasks and backend == "dask"
        ):  # connected before anything is written: an unreachable scheduler leaves no trace
            client = stack.enter_context(dask_client(scheduler, workers))
            capacity = sum(client.nthreads().values())
            limit = n_jobs if scheduler is not None and n_jobs != -1 else None
            workers = min(capacity, limit or capacity)
            where_run["scheduler"] = scheduler or "LocalCluster on 127.0.0.1"
        if not resume:
            store.clear()
        store.describe(grid)  # so that `study table OUT` reads the finished runs while this runs
        bundled: dict[int, tuple[Task, ...]] = {}  # a bundle's first task's n -> its tasks (trained together)
        training = time.perf_counter()
        if not tasks:
            results: Iterator[tuple] = iter(())
        elif backend == "dask":
            results = dask_results(
                client,
                plan,
                tasks,
                checkpoints,
                engine,
                devices,
                limit,
                chunk_timeout or DEFAULT_CHUNK_TIMEOUT,
                options,
            )
            stack.callback(results.close)  # left early (Ctrl-C): the chunks in flight are cancelled
        else:
            jobs = bundle(tasks, engine, devices, workers, chunk_size, options)
            results = stack.enter_context(
                local_results(plan, jobs, checkpoints, engine, devices, backend, workers, options)
            )
            bundled.update((job[0].n, job) for job in jobs if len(job) > 1)
        initial = n_runs - to_compute
        bar = stack.enter_context(_progress(grid.name, n_runs, initial, progress, sum(t.seconds for t in tasks)))
        for n, outcome, reason in results:
            job = bundled.get(n, (tasks[n],))
            for task, segment in zip(job, _segments(outcome, reason, len(job))):
                if isinstance(segment, str):
                    chunk = task.chunk(plan)
                    failure = ChunkFailure(
                        chunk_id(chunk, checkpoints, engine), task.runs, _describe(grid, chunk), segment
                    )
                    failed.append((position[task.spec], failure))
                    continue
                store.add(segment, keys_id(segment.keys, grid.stream, segment.checkpoints, engine, SCHEMA_VERSION))
                computed_runs += task.runs
                if isinstance(bar, _LineProgress):
                    bar.update(task.runs, task.seconds)
                else:
                    bar.update(task.runs)
    if tasks and not failed and backend != "dask":  # how far the models were off on this machine
        work = [(t.spec, t.runs, t.seconds) for t in tasks]
        pace.record(
            pace.kind(engine, devices),
            _model_seconds(plan, work, devices, engine, workers, start_seconds(backend)),
            time.perf_counter() - training,
        )

    def metadata(n_rows: int, **extra: Any) -> dict:
        return _metadata(
            grid,
            engine,
            devices,
            workers,
            where_run,
            computed=len(tasks) - len(failures),
            resumed=reused_chunks,
            runs_computed=computed_runs,
            runs_reused=n_runs - to_compute,
            wall=time.perf_counter() - started,
            n_runs=n_runs,
            n_rows=n_rows,
            **extra,
        )

    failures = [f for _, f in sorted(failed, key=lambda pair: pair[0])]  # in the grid's order, not as they ended
    # What a Parquet table carries inside: what defines its rows (no timing, so that the table of
    # a seeded grid is the same bytes run to run; the sidecar has the rest).
    identity = {
        "name": grid.name,
        "spec": grid.to_dict(),
        "schema_version": SCHEMA_VERSION,
        "engine": engine,
        "stream": grid.stream,
        "study": __version__,
    }
    if failures:
        partial, written = _keep_partial(out, plan, store, identity, frame, metadata, failures)
        raise ChunksFailed(failures, len(tasks) + reused_chunks, n_runs, partial, written, resumable=out is not None)
    df = table_frame(plan, store) if frame or out is None else None
    if out is not None:
        _write_output(out, df, plan, store, identity, metadata(n_runs * len(checkpoints)))
    return df


def _partial_paths(out: Path) -> tuple[Path, Path]:
    """Where the runs that finished go when some chunks failed: NAME.partial.EXT and its sidecar."""
    return out.with_name(out.stem + ".partial" + out.suffix), out.with_name(out.stem + ".partial.meta.json")


def _keep_partial(
    out: Path | None,
    plan: Plan,
    store: RunStore,
    identity: dict,
    frame: bool,
    metadata: Any,
    failures: list[ChunkFailure],
) -> tuple[pd.DataFrame | None, Path | None]:
    """Some chunks failed: the rows of the runs that finished (a frame with ``frame``), written
    as NAME.partial.EXT with a sidecar that lists the failures; and the path written."""
    partial = table_frame(plan, store, only_held=True) if frame else None
    if out is None:
        return partial, None
    partial_table, partial_meta = _partial_paths(out)
    written, partial_rows = None, 0
    if len(store):
        counter = _RowCounter()
        write_table_blocks(
            counter.count(table_blocks(plan, store, only_held=True)), partial_table, {**identity, "partial": True}
        )
        written, partial_rows = partial_table, counter.rows
    else:  # nothing finished: an older partial table would pass for this run's
        partial_table.unlink(missing_ok=True)
    write_json(
        metadata(partial_rows, partial=True, complete_output=str(out), failed_chunks=[asdict(f) for f in failures]),
        partial_meta,
    )
    return partial, written


def _write_output(out: Path, df: pd.DataFrame | None, plan: Plan, store: RunStore, identity: dict, meta: dict) -> None:
    """The table (from the frame, or block by block from the store), then its sidecar; an
    earlier run's partial table and temporaries go."""
    if df is not None:
        write_table(df, out, identity)
    else:
        write_table_blocks(table_blocks(plan, store), out, identity)
    write_json(meta, out.with_name(out.stem + ".meta.json"))
    for stale in _partial_paths(out):  # an earlier run's, now superseded
        stale.unlink(missing_ok=True)
    _remove_stale_temporaries(out)


class _RowCounter:
    """Counts the rows of the blocks that pass through it."""

    def __init__(self) -> None:
        self.rows = 0

    def count(self, blocks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for block in blocks:
            self.rows += len(block)
            yield block


def _describe(grid: Grid, chunk: Chunk) -> str:
    """The grid cells a chunk's runs span: its (num_train, batch_size), and the values it
    holds of every other axis that varies in the grid, replicates as a range."""
    names = ["num_train", "batch_size"]
    names += [a for a in RUN_AXES if a not in names and len(getattr(grid, a)) > 1]
    parts = []
    for name in names:
        values = sorted(set(chunk.column(name).tolist()))
        parts.append(f"{name}={values[0]!r}" if len(values) == 1 else f"{name}={values!r}")
    if grid.replicates > 1:
        reps = sorted(set(chunk.replicate.tolist()))
        if len(reps) == 1:
            parts.append(f"replicate={reps[0]}")
        elif reps == list(range(reps[0], reps[-1] + 1)):
            parts.append(f"replicate={reps[0]}..{reps[-1]}")
        else:
            parts.append(f"replicate={reps}")
    return ", ".join(parts)


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of this output that a run killed while writing it left behind (a
    finished write renames its own away), beside it and in its store."""
    for name in (
        out.name,
        out.stem + ".meta.json",
        out.stem + ".partial" + out.suffix,
        out.stem + ".partial.meta.json",
    ):
        for tmp in out.parent.glob(f".{glob.escape(name)}.*.tmp"):
            tmp.unlink(missing_ok=True)
    store = store_path(out)
    if store.is_dir():
        for tmp in store.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _git_commit() -> str | None:
    """The commit of the checkout the package is imported from (with "-dirty" where tracked
    files changed), or None: an installed package is not in a checkout of its own, and the
    repository it may lie inside (a virtual environment in some project's folder) is another's."""
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / ".git").exists() or not (checkout / "pyproject.toml").is_file():
        return None
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=checkout, capture_output=True, text=True, timeout=5
        )
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != checkout:
            return None
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _metadata(
    grid,
    engine,
    devices,
    workers,
    where_run,
    *,
    computed,
    resumed,
    runs_computed,
    runs_reused,
    wall,
    n_runs,
    n_rows,
    **extra,
) -> dict:
    return {
        "name": grid.name,
        "description": grid.description,
        "spec": grid.to_dict(),
        "schema_version": SCHEMA_VERSION,
        "engine": engine,
        "engine_revision": ENGINE_REVISIONS[engine],
        "stream": grid.stream,
        "devices": devices,
        "device_names": [
            torch.cuda.get_device_name(d)
            if d.startswith("cuda")
            else "each Dask worker's GPU, or its CPU"
            if d == "auto"
            else platform.processor() or platform.machine()
            for d in devices
        ],
        "workers": workers,
        **where_run,
        "runs": n_runs,
        "rows": n_rows,
        "runs_computed": runs_computed,
        "runs_reused": runs_reused,
        "chunks_computed": computed,
        "chunks_resumed": resumed,
        "wall_time_s": round(wall, 3),
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "versions": {
            "study": __version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "joblib": joblib.__version__,
        },
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        **extra,
    }
