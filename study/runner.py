"""run_grid: a grid cut into chunks, dispatched with joblib over the available devices.

Chunks hold runs of one (num_train, batch_size), so that they share a step schedule; their
size follows the engine's memory budget. Every chunk is a pure function of its runs, so the
table does not depend on the number of workers, the chunking, the backend or the order in
which chunks finish.

Resume: with an output path, each finished chunk is saved atomically in ``OUT.chunks/`` as it
arrives. A chunk file's name is a hash of the schema version, the engine, the checkpoints and
the run keys of the chunk, so a file from another spec, engine or schema is never taken for
one of this run's. A rerun loads what is saved and computes the rest; ``resume=False`` starts
over. Once the CSV is written the folder is removed.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import pickle
import shutil
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import engine as engines
from ._checks import check_choice, fail
from .grid import Grid, Run
from . import __version__
from .results import SCHEMA_VERSION, atomic_write, finish, to_frame, write_csv, write_json

__all__ = ["run_grid", "plan_chunks", "resolve_devices", "BACKENDS", "DEFAULT_CHUNK_RUNS"]

BACKENDS = ("loky", "multiprocessing", "threading", "sequential")
#: Upper bound on runs per chunk: large enough to amortise Python overhead per SGD step,
#: small enough that a grid splits into work for every core and resumes at a fine grain.
DEFAULT_CHUNK_RUNS = 256


def plan_chunks(runs: Sequence[Run], chunk_size: int | None = None) -> list[list[Run]]:
    """Cut runs into chunks of one (num_train, batch_size), runs sharing a stream kept together.

    A chunk has at most ``chunk_size`` runs (default DEFAULT_CHUNK_RUNS) and never more than
    the engine's memory budget allows for its size.
    """
    groups: dict[tuple[int, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.num_train, run.batch_size), []).append(run)
    chunks = []
    for (num_train, _), group in sorted(groups.items()):
        group.sort(key=lambda r: (r.seed, r.index))
        cap = engines.max_chunk_runs(num_train, group[0].num_val, len(group[0].w))
        cap = min(cap, chunk_size or DEFAULT_CHUNK_RUNS)
        chunks.extend(group[i : i + cap] for i in range(0, len(group), cap))
    return chunks


def chunk_id(chunk: Sequence[Run], checkpoints: Sequence[int], engine: str) -> str:
    ident = repr((SCHEMA_VERSION, engine, list(checkpoints), [r.key for r in chunk]))
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def resolve_devices(device: str) -> list[str]:
    """``auto``: every CUDA GPU when there are any, else the CPU. ``cpu``, ``cuda`` (all GPUs)
    and ``cuda:N`` name devices directly."""
    if not isinstance(device, str):
        fail("device", "parameter of run_grid", "'auto', 'cpu', 'cuda' or 'cuda:N'", device)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return [f"cuda:{i}" for i in range(gpus)] or ["cpu"]
    if device == "cpu":
        return ["cpu"]
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if gpus == 0:
            fail("device", "parameter of run_grid", "a device that exists (this machine has no CUDA GPU)", device)
        if device == "cuda":
            return [f"cuda:{i}" for i in range(gpus)]
        if int(device[5:]) >= gpus:
            fail("device", "parameter of run_grid", f"a CUDA device in 0..{gpus - 1}", device)
        return [device]
    fail("device", "parameter of run_grid", "'auto', 'cpu', 'cuda' or 'cuda:N'", device)


#: Seconds a new worker process takes to start and import torch (measured: about 1.5-2 s).
WORKER_START_S = 2.0


def _worker_count(n_jobs: int, devices: list[str], todo: list[list[Run]], max_epoch: int) -> int:
    """Workers for the chunks to do. An explicit n_jobs is obeyed (up to one per chunk). With
    -1: one per GPU, or on CPUs as many as pay for their start-up: a grid of a second's work
    runs in this process, since starting workers would cost more than it saves."""
    if n_jobs != -1:
        wanted = n_jobs
    elif devices[0].startswith("cuda"):
        wanted = len(devices)
    else:
        work = sum(engines.estimated_seconds(c[0].num_train, c[0].batch_size, len(c), max_epoch) for c in todo)
        wanted = min(joblib.cpu_count(), int(work // WORKER_START_S))
    return max(1, min(wanted, len(todo)))


def _train_chunk(chunk: list[Run], checkpoints: list[int], engine: str, device: str, cid: str):
    """One task: a chunk trained on one device with one torch thread (no oversubscription)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = engines.train_batched if engine == "batched" else engines.train_reference
        return cid, to_frame(chunk, checkpoints, train(chunk, checkpoints, device))
    finally:
        torch.set_num_threads(threads)


def _load_chunk(path: Path, cid: str, expected_rows: int) -> pd.DataFrame | None:
    """A saved chunk, or None if it is missing, truncated, or not this chunk."""
    try:
        with open(path, "rb") as f:
            saved = pickle.load(f)
        ok = saved["chunk_id"] == cid and saved["schema"] == SCHEMA_VERSION and len(saved["frame"]) == expected_rows
        return saved["frame"] if ok else None
    except Exception:  # a truncated or foreign file is recomputed, whatever broke in reading it
        return None


def _save_chunk(path: Path, cid: str, frame: pd.DataFrame) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pickle.dump({"chunk_id": cid, "schema": SCHEMA_VERSION, "frame": frame}, f, protocol=5)

    atomic_write(path, write)


def check_output(out: str | Path) -> Path:
    """Refuse an output path that cannot be written, before any work starts."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        fail("out", "parameter of run_grid", "a path ending in .csv", str(out))
    if out.is_dir():
        fail("out", "parameter of run_grid", "a file path, not a folder", str(out))
    parent = out.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        fail("out", "parameter of run_grid", "a path in a folder that can be written", str(out))
    if out.exists() and not os.access(out, os.W_OK):
        fail("out", "parameter of run_grid", "a file that can be written", str(out))
    return out


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
        large enough to pay for starting them (a small grid runs in this process).
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
    engine : {"batched", "reference"}, default="batched"
        ``reference`` trains one run at a time with :class:`~study.train.Trainer` (CPU only).
    backend : {"loky", "multiprocessing", "threading", "sequential"}, default="loky"
        The joblib backend.
    resume : bool, default=True
        Reuse chunks saved by an earlier, interrupted run of the same grid and output.
    progress : bool, default=True
        Show a progress bar (only when stderr is a terminal).
    chunk_size : int, optional
        At most this many runs per chunk (default DEFAULT_CHUNK_RUNS, and the memory budget).

    Returns
    -------
    DataFrame
        One row per run per checkpoint; columns as in :mod:`study.results`.

    Examples
    --------
    >>> df = run_grid(Grid(num_train=[20, 50], lr=[0.03, 0.1], epoch=[1, 3]), n_jobs=1, progress=False)
    >>> len(df)  # 4 runs x (epoch 0, 1, 3)
    12
    """
    where = "parameter of run_grid"
    if not isinstance(grid, Grid):
        fail("grid", where, "a Grid", grid)
    check_choice(engine, "engine", where, engines.ENGINES)
    check_choice(backend, "backend", where, BACKENDS)
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or (n_jobs < 1 and n_jobs != -1):
        fail("n_jobs", where, "a positive integer or -1 (all cores)", n_jobs)
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        fail("chunk_size", where, "a positive integer or None", chunk_size)
    devices = resolve_devices(device)
    if engine == "reference" and devices[0] != "cpu":
        fail("device", where, "'cpu' or 'auto' on a machine without GPU when engine is 'reference'", device)
    out = check_output(out) if out is not None else None

    started = time.perf_counter()
    checkpoints = grid.checkpoints
    runs = grid.runs()
    chunks = plan_chunks(runs, chunk_size)
    ids = [chunk_id(c, checkpoints, engine) for c in chunks]
    frames: dict[str, pd.DataFrame] = {}
    store = None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        store = out.with_name(out.name + ".chunks")
        store.mkdir(exist_ok=True)
        if resume:
            for chunk, cid in zip(chunks, ids):
                frame = _load_chunk(store / f"{cid}.pkl", cid, len(chunk) * len(checkpoints))
                if frame is not None:
                    frames[cid] = frame
        else:
            for stale in store.glob("*.pkl"):
                stale.unlink()
    todo = [(c, cid) for c, cid in zip(chunks, ids) if cid not in frames]
    workers = _worker_count(n_jobs, devices, [c for c, _ in todo], grid.max_epoch)
    bar = tqdm(total=len(runs), initial=len(runs) - sum(len(c) for c, _ in todo), unit="run",
               desc=grid.name, disable=None if progress else True, smoothing=0.1)
    sizes = dict(zip(ids, map(len, chunks)))
    with bar:
        if todo:
            tasks = (
                joblib.delayed(_train_chunk)(c, checkpoints, engine, devices[i % len(devices)], cid)
                for i, (c, cid) in enumerate(todo)
            )
            parallel = joblib.Parallel(n_jobs=workers, backend=backend, return_as="generator_unordered")
            for cid, frame in parallel(tasks):
                if store is not None:
                    _save_chunk(store / f"{cid}.pkl", cid, frame)
                frames[cid] = frame
                bar.update(sizes[cid])
    df = finish([frames[cid] for cid in ids])
    if out is not None:
        write_csv(df, out)
        meta = _metadata(grid, engine, devices, workers, backend, len(todo), len(chunks) - len(todo),
                         time.perf_counter() - started, len(runs), len(df))
        write_json(meta, out.with_name(out.stem + ".meta.json"))
        shutil.rmtree(store)  # saved chunks, and temporary files a killed run left half-written
    return df


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


def _metadata(grid, engine, devices, workers, backend, computed, resumed, wall, n_runs, n_rows) -> dict:
    return {
        "name": grid.name,
        "description": grid.description,
        "spec": grid.to_dict(),
        "schema_version": SCHEMA_VERSION,
        "engine": engine,
        "devices": devices,
        "device_names": [torch.cuda.get_device_name(d) if d.startswith("cuda") else platform.processor() or platform.machine() for d in devices],
        "workers": workers,
        "backend": backend,
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
    }
