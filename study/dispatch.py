"""Local dispatch: chunks trained by joblib workers on this machine, each on one device.

A worker trains a chunk with one torch thread (workers x threads never exceed the cores) and
returns a :class:`~study.store.Segment`: its runs' keys and what training measured. A chunk is
made from its plan as it is handed out, so the parent holds the chunks in flight, never the
grid. A chunk that raises is reported as a failure, never fatal to the others; one that runs
out of GPU memory is split and retried (:func:`split_on_oom`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import joblib
import numpy as np
import torch

from . import engine as engines
from . import kernels
from .grid import Grid
from .options import DEFAULT, Options
from .plan import Chunk, ChunkSpec, Plan
from .schema import metric_columns
from .store import Segment
from .vocabulary import OPTIMIZER_DEFAULTS

__all__: list[str] = []  # private: see study/__init__.py


@dataclass(frozen=True)
class Task:
    """A chunk to train: task ``n`` of a run_grid call, the plan's chunk ``spec``, or of it only
    the runs at ``rows`` (those the store lacks); ``runs`` of them, estimated at ``seconds`` and
    at most ``memory`` bytes (study.engine.chunk_bytes)."""

    n: int
    spec: ChunkSpec
    rows: np.ndarray | None
    runs: int
    seconds: float
    memory: int = 0

    def chunk(self, plan: Plan) -> Chunk:
        chunk = plan.chunk(self.spec)
        return chunk if self.rows is None else chunk.take(self.rows)


#: Seconds a new worker process takes to start and import torch (measured: about 1.5-2 s).
WORKER_START_S = 2.0


def local_backend(backend: str, grid: Grid, engine: str, devices: Sequence[str], options: Options = DEFAULT) -> str:
    """The backend ``backend`` names; ``auto``: threads in this process where every chunk trains
    in compiled loops (the batched engine's plain SGD on the CPU with the counter stream, and
    Numba), else loky's worker processes.

    The compiled loops release the GIL, so threads scale with the cores as processes do, and
    they need neither a worker's start-up (about 2 s each, mostly importing torch) nor the
    results' pickling. Elsewhere training is tensor operations whose dispatch holds the GIL
    (measured: the torch stream's 100k W runs took as long on two threads as on two workers,
    without their start-up), so loky's processes serve there.
    """
    if backend != "auto":
        return backend
    compiled = (
        engine == "batched"
        and list(devices) == ["cpu"]
        and grid.stream == "counter"
        and options.compiled
        and kernels.AVAILABLE
        and all(getattr(grid, axis) == [value] for axis, value in OPTIMIZER_DEFAULTS.items())
    )
    return "threading" if compiled else "loky"


def start_seconds(backend: str) -> float:
    """What one more worker of ``backend`` costs to start: nothing for a thread, else (a
    process) its import of torch."""
    return 0.0 if backend == "threading" else WORKER_START_S


def bundle(
    tasks: Sequence[Task],
    engine: str,
    devices: list[str],
    workers: int,
    chunk_size: int | None,
    options: Options = DEFAULT,
) -> list[tuple[Task, ...]]:
    """The tasks as jobs: one each, or, for the batched engine on a single CPU worker (where no
    worker waits on another) and chunks cut as run_grid chooses (not to an asked ``chunk_size``,
    which also sets how often finished runs are kept), bundles of one batch_size, within
    the options' bundle_runs, bundle_seconds and chunk_memory_budget, taken in the tasks' order (and of one
    num_inputs: runs trained together share their number of features)."""
    if workers > 1 or engine != "batched" or devices[0] != "cpu" or chunk_size is not None:
        return [(task,) for task in tasks]
    jobs: list[tuple[Task, ...]] = []
    filling: dict[tuple[int, int], list[Task]] = {}  # (batch_size, num_inputs) indices -> the bundle being filled
    for task in tasks:
        current = filling.setdefault((task.spec.batch_size_i, task.spec.num_inputs_i), [])
        if current and (
            sum(t.runs for t in current) + task.runs > options.bundle_runs
            or sum(t.seconds for t in current) + task.seconds > options.bundle_seconds
            or sum(t.memory for t in current) + task.memory > options.chunk_memory_budget
        ):
            jobs.append(tuple(current))
            current.clear()
        current.append(task)
    jobs += [tuple(b) for b in filling.values() if b]
    return jobs


def worker_count(n_jobs: int, devices: list[str], work: Sequence[float], start_s: float = WORKER_START_S) -> int:
    """Workers for the chunks to do, given each chunk's estimated one-core seconds. An explicit
    n_jobs is obeyed up to one per chunk and, on CPUs, one per core: each worker trains with one
    torch thread, so workers x threads never exceeds the cores. With -1: one per GPU, or on CPUs
    as many as pay for their start-up, ``start_s`` each (:func:`start_seconds`): with worker
    processes a grid of a second's work runs in this process, since starting them would cost
    more than it saves; threads start at once."""
    if n_jobs != -1:
        wanted = n_jobs if devices[0].startswith("cuda") else min(n_jobs, joblib.cpu_count())
    elif devices[0].startswith("cuda"):
        wanted = len(devices)
    elif start_s > 0:
        wanted = min(joblib.cpu_count(), int(sum(work) // start_s))
    else:
        wanted = joblib.cpu_count()
    return max(1, min(wanted, len(work)))


def train_chunk(
    chunk: Chunk | list[Chunk], checkpoints: list[int], engine: str, device: str, n: int, options: Options = DEFAULT
):
    """One job: a chunk trained on one device with one torch thread, under ``options`` (which
    travel with the job: a worker process has its own modules).

    Returns ``(n, segment, None)``, or ``(n, None, reason)`` when training raised: a failed
    chunk is recorded and reported, never fatal to the others. A chunk that runs out of GPU
    memory is split in two, and each half trained (and split again if need be). For a list of
    chunks (a bundle, trained together), ``(n, outcomes, None)``: a segment or a failure's
    reason for each chunk; should training them together raise, each is trained alone, so
    that only a chunk that raises alone fails.
    """
    # One torch thread per task, so that tasks x threads stays within the cores. Not restored:
    # on a Dask worker with several threads a restore would race with the tasks beside it;
    # run_grid restores its caller's setting for the chunks it trains in its own process.
    torch.set_num_threads(1)
    if isinstance(chunk, list):
        try:
            results = engines.train_batched_together(chunk, checkpoints, local_device(device), options)
            return n, [_segment(c, r, checkpoints) for c, r in zip(chunk, results)], None
        except Exception:  # which of them raised is not known: each alone says
            return (
                n,
                [
                    reason if segment is None else segment
                    for _, segment, reason in (train_chunk(c, checkpoints, engine, device, n, options) for c in chunk)
                ],
                None,
            )
    try:
        device = local_device(device)
        if engine == "batched":

            def train(c, points, dev):
                return engines.train_batched(c, points, dev, options)
        else:
            train = engines.train_reference
        return n, _segment(chunk, split_on_oom(train, chunk, checkpoints, device), checkpoints), None
    except Exception as err:  # whatever broke in this chunk, the others go on
        return n, None, one_line(err)


def _segment(chunk: Chunk, result: engines.ChunkResult, checkpoints: list[int]) -> Segment:
    return Segment(chunk.key.copy(), tuple(checkpoints), metric_columns(result, len(checkpoints)))


def local_device(device: str) -> str:
    """``auto`` as a Dask worker resolves it: its first GPU where it has one, else its CPU."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def split_on_oom(train, chunk: Chunk, checkpoints: list[int], device: str) -> engines.ChunkResult:
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
    results = [split_on_oom(train, chunk.take(rows), checkpoints, device) for rows in parts]
    back = np.argsort(np.concatenate(parts), kind="stable")  # the chunk's own order again
    return engines.ChunkResult.concat(results).take(back)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def init_worker(parent: int) -> None:
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


class _ThreadedTraining:
    """train_chunk for the threads of this process (the threading backend), which knows the
    chunks in flight, so that run_grid, stopped early, waits for them before it returns.

    A thread cannot be stopped, and joblib's abort leaves the ones training running: a process
    that then exits while one is inside torch's or Numba's code is aborted by the C++ runtime as
    it tears down ("terminate called without an active exception", measured in 2 of 15 stops by
    SIGTERM). A chunk takes a second or so (its memory budget bounds it), so the wait is short.
    Chunks that a thread picks up after the stop return at once, untrained."""

    def __init__(self) -> None:
        self._running = 0
        self._stopped = False
        self._changed = threading.Condition()

    def __call__(self, *args):
        with self._changed:
            if self._stopped:
                return args[4], None, "stopped"  # (n, no segment, a reason): nobody reads it
            self._running += 1
        try:
            return train_chunk(*args)
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def settle(self) -> None:
        """No chunk starts from now on; returns once none is training."""
        with self._changed:
            self._stopped = True
            self._changed.wait_for(lambda: self._running == 0)


@contextlib.contextmanager
def local_results(
    plan: Plan,
    jobs: Sequence[tuple[Task, ...]],
    checkpoints: list[int],
    engine: str,
    devices: list[str],
    backend: str,
    workers: int,
    options: Options = DEFAULT,
) -> Iterator[Iterator[tuple]]:
    """The jobs' outcomes as :func:`train_chunk` gives them (``n`` a job's first task's), as
    they finish, from ``workers`` joblib workers of ``backend``; jobs go round the devices. Left
    early (Ctrl-C), the chunks still in flight are cancelled on the way out (threads', which
    cannot be, are waited for: see :class:`_ThreadedTraining`)."""
    made = ((job[0].chunk(plan) if len(job) == 1 else [task.chunk(plan) for task in job], job[0].n) for job in jobs)
    threads = _ThreadedTraining() if backend == "threading" else None
    train = train_chunk if threads is None else threads
    calls = (
        joblib.delayed(train)(chunk, checkpoints, engine, devices[i % len(devices)], n, options)
        for i, (chunk, n) in enumerate(made)
    )
    init = {"initializer": init_worker, "initargs": (os.getpid(),)} if backend == "loky" else {}
    with joblib.parallel_config(backend=backend, **init), warnings.catch_warnings():
        # Stopped early, joblib warns that it cancelled the chunks in flight: what run_grid's
        # caller is told says that already, and how to resume.
        warnings.filterwarnings("ignore", message=r".*still being processed by the workers have been cancelled")
        results = joblib.Parallel(n_jobs=workers, return_as="generator_unordered")(calls)
        try:
            yield results
        finally:
            results.close()
            if threads is not None:  # left early: the chunks still training end first
                threads.settle()
