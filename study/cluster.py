"""Dask dispatch: chunks trained on a Dask cluster through the distributed Client.

joblib's own Dask backend is not used: when a task keeps killing its worker, Dask gives up on
it (KilledWorker) but joblib never hears of it and waits forever, and a failure there cannot be
told apart by chunk. Here every chunk ends, with its runs or a failure, within
``chunk_timeout`` seconds per attempt (see :func:`dask_results`). Without a scheduler, a
LocalCluster of single-threaded worker processes on 127.0.0.1 is started and stopped around
the run (:func:`dask_client`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._checks import fail
from .dispatch import Task, one_line, train_chunk
from .options import DEFAULT, Options
from .plan import Chunk, Plan

__all__: list[str] = []  # private: see study/__init__.py

#: Seconds to wait for a Dask scheduler to answer before giving up on it.
DASK_CONNECT_TIMEOUT = 30


#: How often, at most, the Dask loop wakes to check deadlines and the workers it has.
_DASK_POLL_S = 0.5


def check_dask_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        fail(
            "backend",
            "parameter of run_grid",
            "one of the backends installed ('dask' needs the dask extra: pip install 'estimation-study[dask]')",
            "dask",
        )


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Any]:
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
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    silence_logs=logging.CRITICAL,
                    local_directory=scratch,
                    preload=[_IGNORE_CTRL_C],
                )
            )
            yield stack.enter_context(Client(cluster, set_as_default=False))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_SCRATCH_PREFIX = "study-dask-"


def _remove_scratch_of_dead_runs() -> None:
    for folder in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*-*"):
        pid = folder.name[len(_SCRATCH_PREFIX) :].split("-")[0]
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


#: Ctrl-C ignored in the workers of a LocalCluster, as a Dask preload (the text of a script run
#: in each worker process at its start). They leave with their parent on their own.
_IGNORE_CTRL_C = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)"


@dataclass
class _Attempt:
    chunk: Chunk
    n: int
    device: str
    alone: bool  # the second attempt of a chunk whose workers died: no other chunk beside it
    deadline: float


def dask_results(
    client: Any,
    plan: Plan,
    tasks: Sequence[Task],
    checkpoints: list[int],
    engine: str,
    devices: list[str],
    limit: int | None,
    chunk_timeout: float,
    options: Options = DEFAULT,
) -> Generator[tuple, None, None]:
    """Train chunks on a Dask cluster; yield ``(n, segment, None)`` or ``(n, None, reason)``
    for every chunk, each within ``chunk_timeout`` seconds of being handed to the cluster.

    At most one chunk per worker thread is on the cluster at a time, so a chunk's clock runs
    while it runs, not while it queues. When a worker dies, Dask runs its tasks elsewhere, up to
    ``distributed.scheduler.allowed-failures`` times (3), then fails them with KilledWorker. A
    chunk that was only running beside the culprit in a dying worker can be failed too, so a
    chunk failed that way is tried once more, alone on the cluster, after the others; if it
    kills its worker again, it is the culprit and is reported.
    """
    from distributed import KilledWorker

    pending = collections.deque((task, task.n, devices[i % len(devices)]) for i, task in enumerate(tasks))
    suspects: collections.deque = collections.deque()
    inflight: dict[Any, _Attempt] = {}
    no_workers_since: float | None = None
    settled = threading.Event()  # set by any future that finishes, errs or is cancelled

    def submit(chunk: Chunk | Task, n: int, device: str, alone: bool) -> None:
        if not isinstance(chunk, Chunk):  # made as it is handed out
            chunk = chunk.chunk(plan)
        future = client.submit(
            train_chunk,
            chunk,
            checkpoints,
            engine,
            device,
            n,
            options,
            key=f"study-chunk-{n}-{uuid.uuid4().hex[:8]}",
            pure=False,
        )
        inflight[future] = _Attempt(chunk, n, device, alone, time.monotonic() + chunk_timeout)
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
                left = [a.n for a in inflight.values()] + [n for _, n, _ in (*pending, *suspects)]
                inflight.clear()
                for n in left:
                    yield n, None, reason
                return
            slots = min(capacity, limit or capacity) - len(inflight)
            while pending and slots > 0:
                submit(*pending.popleft(), alone=False)
                slots -= 1
            if not pending and not inflight and suspects and capacity > 0:
                chunk, n, device = suspects.popleft()
                submit(chunk, n, device, alone=True)
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
                        suspects.append((attempt.chunk, attempt.n, attempt.device))
                    else:
                        yield outcome
                elif now > attempt.deadline:
                    del inflight[future]
                    _give_up(client, future)
                    yield (
                        attempt.n,
                        None,
                        (
                            f"no result within {chunk_timeout:g} s (chunk_timeout); "
                            "the chunk was cancelled and its worker restarted"
                        ),
                    )
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


def _outcome(future: Any, attempt: _Attempt, killed_worker: type[Any]) -> tuple | None:
    """What a finished attempt gives: the task's own ``(n, segment, reason)``, a failure, or None
    for a first attempt whose workers died under it (it is tried again, alone)."""
    if future.status == "finished":
        try:
            return future.result(timeout=DASK_CONNECT_TIMEOUT)
        except Exception as exc:  # the result was lost with its worker between done and here
            return attempt.n, None, one_line(exc)
    if future.status == "cancelled":
        return attempt.n, None, "cancelled by the Dask cluster (was the scheduler restarted?)"
    err = future.exception()
    if isinstance(err, killed_worker):
        if not attempt.alone:
            return None
        return (
            attempt.n,
            None,
            (
                f"KilledWorker: the worker process died each of the {err.allowed_failures + 1} times it ran this chunk, "
                "alone on the cluster too (out of memory? a crash in native code? see the workers' logs)"
            ),
        )
    return attempt.n, None, one_line(err)
