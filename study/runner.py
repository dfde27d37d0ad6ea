"""run_grid: a grid cut into chunks, dispatched over the available devices, on one machine or a cluster.

Planning (study.plan): chunks hold whole streams of one (num_train, batch_size), so that they
share a step schedule, as columns of arrays; a chunk is made when it is handed out, so a grid
of millions of runs never exists as Python objects. A chunk's size follows its device: on a GPU,
a share of its free memory; on CPUs, the memory budget and a share of the grid's work, so that
the chunks, largest first, balance over the workers. Every chunk is a pure function of its runs,
so the table does not depend on the number of workers, the chunking, the backend or the order
in which chunks finish.

Dispatch: joblib on one machine (``loky`` and the other joblib backends); the distributed
Client directly for ``backend="dask"``. joblib's own Dask backend is not used: when a task keeps
killing its worker, Dask gives up on it (KilledWorker) but joblib never hears of it and waits
forever, and a failure there cannot be told apart by chunk. Here every chunk ends, with its rows
or a failure, within ``chunk_timeout`` seconds per attempt (see ``_dask_results``).

Failures: a chunk that raises, or whose worker dies under it, is reported (a ChunkFailure: its
runs, the grid cells they span, the reason); the other chunks go on and are saved. run_grid then
raises ChunksFailed, after writing what finished as ``NAME.partial.csv``; a rerun computes only
the chunks that are missing.

Resume: with an output path, each finished chunk is saved atomically in ``OUT.chunks/`` as it
arrives, with a digest of its contents. A chunk file's name is a hash of the schema version, the
engine, the stream, the checkpoints and the run keys of the chunk, so a file from another spec,
engine, stream or schema is never taken for one of this run's, and a truncated or damaged file fails its digest
and is recomputed. A rerun loads what is saved and computes the rest; ``resume=False`` starts
over. Once the CSV is written the folder is removed.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import glob
import hashlib
import logging
import os
import pickle
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import joblib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__
from . import engine as engines
from ._checks import check_choice, check_output, check_real, fail
from .grid import RUN_AXES, Grid
from .plan import GPU_MEMORY_SHARE, Chunk, ChunkSpec, Plan, chunk_cap, grid_seconds
from .plan import chunk_id as _chunk_id
from .results import SCHEMA_VERSION, atomic_write, finish, to_frame, write_json, write_table
from .vocabulary import BACKENDS, DEFAULT_CHUNK_TIMEOUT

__all__ = [
    "run_grid", "plan_grid", "plan_chunks", "chunk_id", "resolve_devices", "check_output", "ChunkFailure",
    "ChunksFailed", "OutputBusy", "plan_summary", "BACKENDS", "DEFAULT_CHUNK_TIMEOUT", "AUTO_GPU_MIN_SECONDS",
]

#: ``device="auto"`` takes the GPU for the batched engine with the counter stream when the grid
#: is estimated at more than this many one-core seconds: below it, starting CUDA (a second or
#: two) costs more than the GPU saves (measured, see the README's benchmarks).
AUTO_GPU_MIN_SECONDS = 4.0
#: Seconds to wait for a Dask scheduler to answer before giving up on it.
DASK_CONNECT_TIMEOUT = 30
#: How often, at most, the Dask loop wakes to check deadlines and the workers it has.
_DASK_POLL_S = 0.5
#: A saved chunk starts with this line, then the sha256 of the pickle that follows it.
_CHUNK_MAGIC = b"study-chunk 2\n"
_WHERE = "parameter of run_grid"


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk that gave no rows: which runs it held and why."""

    chunk_id: str
    runs: int  # how many runs the chunk held
    cells: str  # the grid coordinates its runs span, e.g. "num_train=13, batch_size=32, lr=[0.01, 0.1]"
    reason: str

    def __str__(self) -> str:
        return f"chunk {self.chunk_id[:12]} ({self.runs} runs: {self.cells}): {self.reason}"


class ChunksFailed(RuntimeError):
    """Some chunks gave no rows; the others were saved (and written as ``NAME.partial.csv``).

    Attributes
    ----------
    failures : list of ChunkFailure
    partial : DataFrame or None
        The rows of the runs that finished, in grid order (None if none did).
    partial_path : Path or None
        Where those rows were written, when run_grid had an output path.
    """

    def __init__(self, failures: Sequence[ChunkFailure], n_chunks: int, n_runs: int,
                 partial: pd.DataFrame | None = None, partial_path: Path | None = None, resumable: bool = False) -> None:
        self.failures = list(failures)
        self.partial = partial
        self.partial_path = partial_path
        failed_runs = sum(f.runs for f in self.failures)
        message = f"{len(self.failures)} of {n_chunks} chunks ({failed_runs} of {n_runs} runs) failed"
        if partial_path is not None:
            message += f"; the runs that finished are in {partial_path}"
        if resumable:
            message += "; run again to compute only the failed chunks"
        super().__init__(message)


def plan_grid(grid: Grid, chunk_size: int | None = None, devices: Sequence[str] = ("cpu",),
              engine: str = "batched", cores: int | None = None) -> Plan:
    """The grid cut into chunks sized to ``devices`` (see study.plan.chunk_cap)."""
    if devices[0].startswith("cuda"):
        free = min(torch.cuda.mem_get_info(torch.device(d))[0] for d in devices)
        budget, cores = int(free * GPU_MEMORY_SHARE), 0
    else:
        budget, cores = engines.CHUNK_MEMORY_BUDGET, cores or joblib.cpu_count()
    cap = chunk_cap(grid, engine=engine, budget=budget, cores=cores, chunk_size=chunk_size,
                    max_runs=engines.max_chunk_runs, seconds=engines.estimated_seconds)
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
        if engine != "batched" or gpus == 0 or (grid is not None and (
                grid.stream != "counter" or grid_seconds(grid, engines.estimated_seconds) < AUTO_GPU_MIN_SECONDS)):
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


def plan_summary(grid: Grid, n_jobs: int = -1, device: str = "auto", engine: str = "batched",
                 backend: str = "loky", chunk_size: int | None = None) -> str:
    """One line on what run_grid would do: the runs, rows and chunks, the devices and workers,
    an estimate of the time and the size of the CSV. The estimate is rough (the models behind
    it were fitted on this project's machine and one H200; see the README's benchmarks)."""
    devices = resolve_devices(device, engine, grid)
    plan = plan_grid(grid, chunk_size, devices, engine)
    rows = plan.n_runs * len(grid.checkpoints)
    work = [plan.seconds(spec, engines.estimated_seconds) for spec in plan.specs]
    if backend == "dask":
        where, seconds = "a Dask cluster", None
    else:
        workers = _worker_count(n_jobs, devices, work)
        if engine == "reference":
            seconds = sum(spec.runs * plan.steps(spec) for spec in plan.specs) * REFERENCE_STEP_S / workers
        elif devices[0].startswith("cuda"):
            seconds = sum(plan.steps(s) * GPU_STEP_S + s.runs * GPU_RUN_S for s in plan.specs) / len(devices)
        else:
            seconds = max(sum(work) / workers, max(work)) + (WORKER_START_S if workers > 1 else 0.0)
        where = f"{', '.join(devices)}, {workers} worker{'s' if workers > 1 else ''}"
    size = rows * CSV_BYTES_PER_COLUMN * (27 + 3 * (len(grid.w) - 2))
    estimate = "time unknown" if seconds is None else f"about {_duration(seconds)}"
    return (f"{grid.name}: {plan.n_runs:,} runs, {rows:,} rows in {len(plan.specs):,} chunks on {where}; "
            f"{estimate}; the CSV about {_size(size)}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


#: Seconds a new worker process takes to start and import torch (measured: about 1.5-2 s).
WORKER_START_S = 2.0


def _worker_count(n_jobs: int, devices: list[str], work: Sequence[float]) -> int:
    """Workers for the chunks to do, given each chunk's estimated one-core seconds. An explicit
    n_jobs is obeyed up to one per chunk and, on CPUs, one per core: each worker trains with one
    torch thread, so workers x threads never exceeds the cores. With -1: one per GPU, or on CPUs
    as many as pay for their start-up: a grid of a second's work runs in this process, since
    starting workers would cost more than it saves."""
    if n_jobs != -1:
        wanted = n_jobs if devices[0].startswith("cuda") else min(n_jobs, joblib.cpu_count())
    elif devices[0].startswith("cuda"):
        wanted = len(devices)
    else:
        wanted = min(joblib.cpu_count(), int(sum(work) // WORKER_START_S))
    return max(1, min(wanted, len(work)))


def _train_chunk(chunk: Chunk, checkpoints: list[int], engine: str, device: str, cid: str):
    """One task: a chunk trained on one device with one torch thread.

    Returns ``(cid, frame, None)``, or ``(cid, None, reason)`` when training raised: a failed
    chunk is recorded and reported, never fatal to the others. A chunk that runs out of GPU
    memory is split in two, and each half trained (and split again if need be).
    """
    # One torch thread per task, so that tasks x threads stays within the cores. Not restored:
    # on a Dask worker with several threads a restore would race with the tasks beside it;
    # run_grid restores its caller's setting for the chunks it trains in its own process.
    torch.set_num_threads(1)
    try:
        device = _local_device(device)
        train = engines.train_batched if engine == "batched" else engines.train_reference
        return cid, to_frame(chunk, checkpoints, _split_on_oom(train, chunk, checkpoints, device)), None
    except Exception as err:  # whatever broke in this chunk, the others go on
        return cid, None, _one_line(err)


def _local_device(device: str) -> str:
    """``auto`` as a Dask worker resolves it: its first GPU where it has one, else its CPU."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _split_on_oom(train, chunk: Chunk, checkpoints: list[int], device: str) -> engines.ChunkResult:
    """train(chunk), or on CUDA out-of-memory the results of its two halves (half of its streams
    each, whole, where it has more than one), each trained the same way: a run's numbers do not
    depend on its chunk, so the split changes nothing but the memory."""
    try:
        return train(chunk, checkpoints, device)
    except torch.cuda.OutOfMemoryError:
        if len(chunk) == 1:
            raise
        torch.cuda.empty_cache()
    seeds = np.unique(chunk.seed)
    first = np.isin(chunk.seed, seeds[: len(seeds) // 2]) if len(seeds) > 1 else np.arange(len(chunk)) < len(chunk) // 2
    parts = [np.flatnonzero(first), np.flatnonzero(~first)]
    results = [_split_on_oom(train, chunk.take(rows), checkpoints, device) for rows in parts]
    back = np.argsort(np.concatenate(parts), kind="stable")  # the chunk's own order again
    return engines.ChunkResult.concat(results).take(back)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _load_chunk(path: Path, cid: str, expected_rows: int) -> pd.DataFrame | None:
    """A saved chunk, or None if it is missing, truncated, damaged, or not this chunk."""
    try:
        data = path.read_bytes()
        head = len(_CHUNK_MAGIC)
        digest, payload = data[head : head + 32], data[head + 32 :]
        # The digest is checked before unpickling: a damaged file is never read as a chunk.
        if not data.startswith(_CHUNK_MAGIC) or hashlib.sha256(payload).digest() != digest:
            return None
        saved = pickle.loads(payload)
        ok = saved["chunk_id"] == cid and saved["schema"] == SCHEMA_VERSION and len(saved["frame"]) == expected_rows
        return saved["frame"] if ok else None
    except Exception:  # an unreadable or foreign file is recomputed, whatever broke in reading it
        return None


def _save_chunk(path: Path, cid: str, frame: pd.DataFrame) -> None:
    payload = pickle.dumps({"chunk_id": cid, "schema": SCHEMA_VERSION, "frame": frame}, protocol=5)
    data = _CHUNK_MAGIC + hashlib.sha256(payload).digest() + payload
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


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


def _check_dask_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        fail("backend", _WHERE, "one of the backends installed ('dask' needs the dask extra: "
             "pip install 'estimation-study[dask]')", "dask")


def run_grid(
    grid: Grid,
    out: str | Path | None = None,
    n_jobs: int = -1,
    device: str = "auto",
    engine: str = "batched",
    backend: str = "loky",
    resume: bool = True,
    progress: bool = True,
    chunk_size: int | None = None,
    scheduler: str | None = None,
    chunk_timeout: float | None = None,
) -> pd.DataFrame:
    """Train every run of a grid and return the tidy results table.

    Parameters
    ----------
    grid : Grid
    out : path, optional
        Where to write the CSV (and ``NAME.meta.json`` beside it). With a path, finished
        chunks are saved as they finish and a rerun resumes from them.
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
    backend : {"loky", "threading", "sequential", "dask"}, default="loky"
        A joblib backend, or ``dask``: the chunks go to a Dask cluster, the one at
        ``scheduler``, or without one a LocalCluster of ``n_jobs`` single-threaded worker
        processes on 127.0.0.1 (needs the ``dask`` extra).
    resume : bool, default=True
        Reuse chunks saved by an earlier, interrupted run of the same grid and output.
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

    Returns
    -------
    DataFrame
        One row per run per checkpoint; columns as in :mod:`study.results`.

    Raises
    ------
    ChunksFailed
        When some chunks gave no rows. Every other chunk is saved (with ``out``: in
        ``OUT.chunks/``, and written as ``NAME.partial.csv``); a rerun computes only the
        failed ones.

    Examples
    --------
    >>> df = run_grid(Grid(num_train=[20, 50], lr=[0.03, 0.1], epoch=[1, 3]), n_jobs=1, progress=False)
    >>> len(df)  # 4 runs x (epoch 0, 1, 3)
    12
    """
    if not isinstance(grid, Grid):
        fail("grid", _WHERE, "a Grid", grid)
    check_choice(engine, "engine", _WHERE, engines.ENGINES)
    check_choice(backend, "backend", _WHERE, BACKENDS)
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or (n_jobs < 1 and n_jobs != -1):
        fail("n_jobs", _WHERE, "a positive integer or -1 (all cores)", n_jobs)
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        fail("chunk_size", _WHERE, "a positive integer or None", chunk_size)
    scheduler = _check_scheduler(scheduler, backend)
    if chunk_timeout is not None:
        if backend != "dask":
            fail("chunk_timeout", _WHERE, "None unless backend is 'dask' (the only backend that bounds a chunk)",
                 chunk_timeout)
        chunk_timeout = check_real(chunk_timeout, "chunk_timeout", _WHERE)
    if backend == "dask":
        _check_dask_installed()
    devices = resolve_devices(device, engine, grid)
    if engine == "reference" and devices[0] != "cpu":
        fail("device", _WHERE, "'cpu' or 'auto' when engine is 'reference' (it trains on the CPU)", device)
    if backend == "dask" and device == "auto" and engine == "batched" and grid.stream == "counter":
        # The cluster's workers, not this process, know their GPUs: each resolves "auto" itself
        # (_local_device). Chunks are then sized for CPUs, which any worker can hold.
        devices = ["auto"]
    out = check_output(out) if out is not None else None

    with _exclusive(out):
        return _execute(grid, out, n_jobs, devices, engine, backend, resume, progress, chunk_size, scheduler,
                        chunk_timeout)


#: When stderr is not a terminal (a pipe, a log file, nohup), a progress line about this often,
#: for grids expected to take longer than that.
PROGRESS_EVERY_S = 30.0


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced, or closed
        return False


class _LineProgress:
    """Progress as lines on stderr: one when the work starts, then one every PROGRESS_EVERY_S
    seconds, and one at the end (``enabled``: a grid expected to take longer than that)."""

    def __init__(self, total: int, initial: int, name: str, enabled: bool) -> None:
        self.total, self.done, self.name, self.enabled = total, initial, name, enabled
        self.initial = initial
        self.started = self.last = time.monotonic()
        if enabled:
            self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        left = f", about {(self.total - self.done) / rate:.0f} s left" if rate > 0 and self.done < self.total else ""
        print(f"study: {self.name}: {self.done:,} of {self.total:,} runs ({100 * self.done / self.total:.0f}%), "
              f"{elapsed:.0f} s{left}", file=sys.stderr, flush=True)
        self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled and time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self._line()

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled and exc[0] is None:
            self._line()


class OutputBusy(RuntimeError):
    """Another process is writing the same output."""


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
            raise OutputBusy(f"another study run (pid {holder}) is writing {out}; wait for it to finish, or stop it "
                             "(its finished chunks are kept) and run again") from None
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

def _execute(grid: Grid, out: Path | None, n_jobs: int, devices: list[str], engine: str, backend: str, resume: bool,
             progress: bool, chunk_size: int | None, scheduler: str | None, chunk_timeout: float | None) -> pd.DataFrame:
    """run_grid's work, its arguments checked: plan, resume, dispatch, save, assemble, write."""
    started = time.perf_counter()
    checkpoints = grid.checkpoints
    plan = plan_grid(grid, chunk_size, devices, engine)
    n_runs = plan.n_runs
    # Each chunk is made here once to name it (its id hashes its runs' keys), then again when
    # it is handed out: the parent holds the chunks in flight, never the whole grid.
    ids = [chunk_id(plan.chunk(spec), checkpoints, engine) for spec in plan.specs]
    spec_of = dict(zip(ids, plan.specs))
    store = out.with_name(out.name + ".chunks") if out is not None else None
    frames: dict[str, pd.DataFrame] = {}
    if store is not None and resume and store.is_dir():
        for cid, spec in spec_of.items():
            frame = _load_chunk(store / f"{cid}.pkl", cid, spec.runs * len(checkpoints))
            if frame is not None:
                frames[cid] = frame
    # The largest chunks first, so that the last ones to finish are small (balance).
    work = {cid: plan.seconds(spec_of[cid], engines.estimated_seconds) for cid in ids if cid not in frames}
    todo = sorted(work, key=work.get, reverse=True)
    workers = _worker_count(n_jobs, devices, [work[cid] for cid in todo])
    failures: list[ChunkFailure] = []
    where_run: dict[str, Any] = {"backend": backend}
    threads = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, threads)  # chunks trained in this process set it to 1
        client, limit = None, None
        if todo and backend == "dask":  # connected before anything is written: an unreachable scheduler leaves no trace
            client = stack.enter_context(_dask_client(scheduler, workers))
            capacity = sum(client.nthreads().values())
            limit = n_jobs if scheduler is not None and n_jobs != -1 else None
            workers = min(capacity, limit or capacity)
            where_run["scheduler"] = scheduler or "LocalCluster on 127.0.0.1"
        if store is not None:
            store.mkdir(parents=True, exist_ok=True)
            if not resume:
                for stale in store.glob("*.pkl"):
                    stale.unlink()
        pending = [(plan, spec_of[cid], cid) for cid in todo]
        if todo:
            results = stack.enter_context(_dispatched(pending, checkpoints, engine, devices, backend, workers, client,
                                                      limit, chunk_timeout or DEFAULT_CHUNK_TIMEOUT))
        else:
            results = iter(())
        initial = n_runs - sum(spec_of[c].runs for c in todo)
        if progress and not _stderr_is_terminal():  # a pipe, a log file, nohup: lines, not a bar
            expected = sum(work.values()) / max(workers, 1)
            bar = stack.enter_context(_LineProgress(n_runs, initial, grid.name, expected > PROGRESS_EVERY_S))
        else:
            bar = stack.enter_context(tqdm(total=n_runs, initial=initial, unit="run", desc=grid.name,
                                           disable=None if progress else True, smoothing=0.1))
        for cid, frame, reason in results:
            if frame is None:
                failures.append(ChunkFailure(cid, spec_of[cid].runs, _describe(grid, plan.chunk(spec_of[cid])), reason))
                continue
            if store is not None:
                _save_chunk(store / f"{cid}.pkl", cid, frame)
            frames[cid] = frame
            bar.update(spec_of[cid].runs)

    def metadata(n_rows: int, **extra: Any) -> dict:
        return _metadata(grid, engine, devices, workers, where_run, computed=len(todo) - len(failures),
                         resumed=len(ids) - len(todo), wall=time.perf_counter() - started, n_runs=n_runs,
                         n_rows=n_rows, **extra)

    position = {cid: i for i, cid in enumerate(ids)}
    failures.sort(key=lambda f: position[f.chunk_id])  # reported in the grid's order, not as they ended
    partial_table = out.with_name(out.stem + ".partial" + out.suffix) if out is not None else None
    partial_meta = out.with_name(out.stem + ".partial.meta.json") if out is not None else None
    # What a Parquet table carries inside: what defines its rows (no timing, so that the table of
    # a seeded grid is the same bytes run to run; the sidecar has the rest).
    identity = {"name": grid.name, "spec": grid.to_dict(), "schema_version": SCHEMA_VERSION, "engine": engine,
                "stream": grid.stream, "study": __version__}
    if failures:
        done = [frames[cid] for cid in ids if cid in frames]
        partial = finish(done) if done else None
        written = None
        if out is not None:
            if partial is not None:
                write_table(partial, partial_table, {**identity, "partial": True})
                written = partial_table
            else:  # nothing finished: an older partial table would pass for this run's
                partial_table.unlink(missing_ok=True)
            write_json(metadata(0 if partial is None else len(partial), partial=True, complete_output=str(out),
                                failed_chunks=[asdict(f) for f in failures]), partial_meta)
        raise ChunksFailed(failures, len(ids), n_runs, partial, written, resumable=out is not None)
    df = finish([frames[cid] for cid in ids])
    if out is not None:
        write_table(df, out, identity)
        write_json(metadata(len(df)), out.with_name(out.stem + ".meta.json"))
        for stale in (partial_table, partial_meta):  # an earlier run's, now superseded
            stale.unlink(missing_ok=True)
        _remove_stale_temporaries(out)
        shutil.rmtree(store)  # saved chunks, and temporary files a killed run left half-written
    return df


@contextlib.contextmanager
def _dispatched(todo: list[tuple[Plan, ChunkSpec, str]], checkpoints: list[int], engine: str, devices: list[str],
                backend: str, workers: int, client: Any, limit: int | None, chunk_timeout: float) -> Iterator[Iterator]:
    """The chunks' outcomes, ``(cid, frame, None)`` or ``(cid, None, reason)``, as they finish.
    Each chunk is made as it is handed out. Left early (Ctrl-C), the chunks still in flight are
    cancelled on the way out."""
    if backend == "dask":
        results = _dask_results(client, todo, checkpoints, engine, devices, limit, chunk_timeout)
        try:
            yield results
        finally:
            results.close()
        return
    tasks = (joblib.delayed(_train_chunk)(plan.chunk(spec), checkpoints, engine, devices[i % len(devices)], cid)
             for i, (plan, spec, cid) in enumerate(todo))
    init = {"initializer": _init_worker, "initargs": (os.getpid(),)} if backend == "loky" else {}
    with joblib.parallel_config(backend=backend, **init), warnings.catch_warnings():
        # Stopped early, joblib warns that it cancelled the chunks in flight: what run_grid's
        # caller is told says that already, and how to resume.
        warnings.filterwarnings("ignore", message=r".*still being processed by the workers have been cancelled")
        results = joblib.Parallel(n_jobs=workers, return_as="generator_unordered")(tasks)
        try:
            yield results
        finally:
            results.close()


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
    finished write renames its own away)."""
    for name in (out.name, out.stem + ".meta.json", out.stem + ".partial" + out.suffix, out.stem + ".partial.meta.json"):
        for tmp in out.parent.glob(f".{glob.escape(name)}.*.tmp"):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _dask_client(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A Client of the cluster at ``scheduler``, or of a LocalCluster of ``workers``
    single-threaded processes on 127.0.0.1, closed (and the LocalCluster stopped) on exit."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        where = {"scheduler_file": scheduler} if scheduler.endswith(".json") else {"address": scheduler}
        with _dask_logs_silenced(), Client(**where, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False) as client:
            yield client
        return
    # The scheduler's and the workers' scratch space live in a folder of this run's, removed
    # with the cluster (Dask's default, TMPDIR/dask-scratch-space, outlives the run). It is named
    # by this process, so that a run killed outright (SIGKILL) has its folder removed by the next.
    _remove_scratch_of_dead_runs()
    scratch = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-")
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_dask_logs_silenced())
            stack.enter_context(dask.config.set({"temporary-directory": scratch}))
            # No dashboard; the scheduler's HTTP server (always started) on a free loopback port,
            # not on 8787, which another cluster may hold.
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL,
                local_directory=scratch, preload=[_IGNORE_CTRL_C]))
            yield stack.enter_context(Client(cluster, set_as_default=False))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_SCRATCH_PREFIX = "study-dask-"


def _remove_scratch_of_dead_runs() -> None:
    for folder in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*-*"):
        pid = folder.name[len(_SCRATCH_PREFIX):].split("-")[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, and belongs to someone else
        return True
    return True


@contextlib.contextmanager
def _dask_logs_silenced() -> Iterator[None]:
    """Dask's own log lines, quiet while run_grid uses a cluster, then as they were. A worker
    lost, a result gathered again, a heartbeat missed while a cluster shuts down on Ctrl-C:
    Dask copes and logs; what does fail, run_grid reports, chunk by chunk."""
    # Each logger by name: Dask's configuration gives some (distributed.client...) their own level.
    names = [name for name in list(logging.root.manager.loggerDict) if name.split(".")[0] in ("distributed", "tornado")]
    loggers = [logging.getLogger(name) for name in {"distributed", "tornado", *names}]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _init_worker(parent: int) -> None:
    """A loky worker's initializer: Ctrl-C and SIGTERM are ignored, and the worker exits when ``parent``,
    run_grid's process, is gone.

    Ctrl-C at a terminal sends SIGINT to the workers too, and each would print a
    KeyboardInterrupt traceback; run_grid is the one to stop them. A run_grid process that is
    killed outright (SIGKILL) cannot stop them, and loky's idle workers would linger for
    minutes: each watches its parent, and leaves once it has been orphaned (possibly while it
    was still starting, hence the pid passed in rather than read here).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM too: a batch system's SIGTERM reaches the whole process group, and run_grid stops
    # its workers itself (loky kills them with SIGKILL), after keeping what finished.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_ORPHAN_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="study-orphan-watch", daemon=True).start()


#: How often a worker checks that the process that started it is still there.
_ORPHAN_POLL_S = 0.5


#: Ctrl-C ignored in the workers of a LocalCluster, as a Dask preload (the text of a script run
#: in each worker process at its start). They leave with their parent on their own.
_IGNORE_CTRL_C = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)"


@dataclass
class _Attempt:
    chunk: Chunk
    cid: str
    device: str
    alone: bool  # the second attempt of a chunk whose workers died: no other chunk beside it
    deadline: float


def _dask_results(client: Any, todo: list[tuple[Plan, ChunkSpec, str]], checkpoints: list[int], engine: str,
                  devices: list[str], limit: int | None, chunk_timeout: float) -> Iterator[tuple]:
    """Train chunks on a Dask cluster; yield ``(cid, frame, None)`` or ``(cid, None, reason)``
    for every chunk, each within ``chunk_timeout`` seconds of being handed to the cluster.

    At most one chunk per worker thread is on the cluster at a time, so a chunk's clock runs
    while it runs, not while it queues. When a worker dies, Dask runs its tasks elsewhere, up to
    ``distributed.scheduler.allowed-failures`` times (3), then fails them with KilledWorker. A
    chunk that was only running beside the culprit in a dying worker can be failed too, so a
    chunk failed that way is tried once more, alone on the cluster, after the others; if it
    kills its worker again, it is the culprit and is reported.
    """
    from distributed import KilledWorker

    pending = collections.deque(
        ((plan, spec), cid, devices[i % len(devices)]) for i, (plan, spec, cid) in enumerate(todo))
    suspects: collections.deque = collections.deque()
    inflight: dict[Any, _Attempt] = {}
    no_workers_since: float | None = None
    settled = threading.Event()  # set by any future that finishes, errs or is cancelled

    def submit(chunk: Chunk | tuple[Plan, ChunkSpec], cid: str, device: str, alone: bool) -> None:
        if not isinstance(chunk, Chunk):  # made as it is handed out
            chunk = chunk[0].chunk(chunk[1])
        future = client.submit(_train_chunk, chunk, checkpoints, engine, device, cid,
                               key=f"study-chunk-{cid[:12]}-{uuid.uuid4().hex[:8]}", pure=False)
        inflight[future] = _Attempt(chunk, cid, device, alone, time.monotonic() + chunk_timeout)
        future.add_done_callback(lambda _: settled.set())

    try:
        while pending or suspects or inflight:
            capacity = sum(client.nthreads().values())
            now = time.monotonic()
            if capacity > 0:
                no_workers_since = None
            elif no_workers_since is None:
                no_workers_since = now
            elif now - no_workers_since > chunk_timeout:
                reason = f"no Dask worker was connected to the scheduler for {chunk_timeout:g} s (chunk_timeout)"
                client.cancel(list(inflight))
                left = [a.cid for a in inflight.values()] + [cid for _, cid, _ in (*pending, *suspects)]
                inflight.clear()
                for cid in left:
                    yield cid, None, reason
                return
            slots = min(capacity, limit or capacity) - len(inflight)
            while pending and slots > 0:
                submit(*pending.popleft(), alone=False)
                slots -= 1
            if not pending and not inflight and suspects and capacity > 0:
                chunk, cid, device = suspects.popleft()
                submit(chunk, cid, device, alone=True)
            if not inflight:
                time.sleep(_DASK_POLL_S)
                continue
            soonest = min(a.deadline for a in inflight.values())
            settled.wait(max(0.01, min(_DASK_POLL_S, soonest - time.monotonic())))
            settled.clear()  # before the scan: a future that settles after it sets it again
            now = time.monotonic()
            for future, attempt in list(inflight.items()):
                if future.done():
                    del inflight[future]
                    outcome = _outcome(future, attempt, KilledWorker)
                    if outcome is None:
                        suspects.append((attempt.chunk, attempt.cid, attempt.device))
                    else:
                        yield outcome
                elif now > attempt.deadline:
                    del inflight[future]
                    _give_up(client, future)
                    yield attempt.cid, None, (f"no result within {chunk_timeout:g} s (chunk_timeout); "
                                              "the chunk was cancelled and its worker restarted")
    finally:
        if inflight:  # interrupted: the cluster need not finish what no one will read
            with contextlib.suppress(Exception):
                client.cancel(list(inflight))


def _give_up(client: Any, future: Any) -> None:
    """Cancel a chunk past its time, and restart the worker that runs it (through its nanny):
    Dask cannot interrupt a running function, and a worker thread stuck in it would take, and
    time out, every chunk sent there after it."""
    holders = [worker for worker, keys in client.processing().items() if future.key in keys]
    future.cancel()
    if holders:
        client.restart_workers(holders, timeout=DASK_CONNECT_TIMEOUT, raise_for_error=False)


def _outcome(future: Any, attempt: _Attempt, killed_worker: type) -> tuple | None:
    """What a finished attempt gives: the task's own ``(cid, frame, reason)``, a failure, or None
    for a first attempt whose workers died under it (it is tried again, alone)."""
    if future.status == "finished":
        try:
            return future.result(timeout=DASK_CONNECT_TIMEOUT)
        except Exception as err:  # the result was lost with its worker between done and here
            return attempt.cid, None, _one_line(err)
    if future.status == "cancelled":
        return attempt.cid, None, "cancelled by the Dask cluster (was the scheduler restarted?)"
    err = future.exception()
    if isinstance(err, killed_worker):
        if not attempt.alone:
            return None
        return attempt.cid, None, (
            f"KilledWorker: the worker process died each of the {err.allowed_failures + 1} times it ran this chunk, "
            "alone on the cluster too (out of memory? a crash in native code? see the workers' logs)")
    return attempt.cid, None, _one_line(err)


def _git_commit() -> str | None:
    try:
        top = Path(__file__).resolve().parent
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=top, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=top,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _metadata(grid, engine, devices, workers, where_run, *, computed, resumed, wall, n_runs, n_rows, **extra) -> dict:
    return {
        "name": grid.name,
        "description": grid.description,
        "spec": grid.to_dict(),
        "schema_version": SCHEMA_VERSION,
        "engine": engine,
        "stream": grid.stream,
        "devices": devices,
        "device_names": [torch.cuda.get_device_name(d) if d.startswith("cuda") else
                         "each Dask worker's GPU, or its CPU" if d == "auto" else
                         platform.processor() or platform.machine() for d in devices],
        "workers": workers,
        **where_run,
        "runs": n_runs,
        "rows": n_rows,
        "chunks_computed": computed,
        "chunks_resumed": resumed,
        "wall_time_s": round(wall, 3),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "versions": {
            "study": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "pandas": pd.__version__, "numpy": np.__version__, "joblib": joblib.__version__,
        },
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        **extra,
    }
