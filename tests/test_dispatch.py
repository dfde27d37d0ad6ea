"""Local dispatch: tasks, one torch thread each, workers that pay, chunks split on CUDA OOM."""

from __future__ import annotations

import joblib
import numpy as np

from study import kernels
from study.dispatch import Task, bundle, local_backend, local_device, split_on_oom, train_chunk, worker_count
from study.engine import estimated_seconds
from study.grid import Grid
from study.options import DEFAULT, Options
from study.plan import Plan
from study.runner import plan_grid
from study.schema import metric_columns

BUNDLE_RUNS, BUNDLE_SECONDS, CHUNK_MEMORY_BUDGET = (
    DEFAULT.bundle_runs,
    DEFAULT.bundle_seconds,
    DEFAULT.chunk_memory_budget,
)


def test_a_chunk_out_of_gpu_memory_is_split_and_gives_the_same_numbers(monkeypatch):
    """CUDA out-of-memory is simulated: any chunk of more than 4 runs raises it. The chunk is cut
    in halves between streams until the halves fit, and the numbers are the unsplit chunk's."""
    import torch

    from study import engine

    grid = Grid(num_train=[30], lr=[0.01, 0.1], loss=["squared", "huber"], epoch=[2], replicates=5)
    chunk = next(Plan(grid, lambda *_: 10**6).chunks())
    assert len(chunk) == 20
    whole = engine.train_batched(chunk, grid.checkpoints)
    sizes = []

    def small_memory(runs, checkpoints, device="cpu"):
        sizes.append(len(runs))
        if len(runs) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return engine.train_batched(runs, checkpoints, device)

    split = split_on_oom(small_memory, chunk, grid.checkpoints, "cpu")
    assert max(sizes) == 20 and [s for s in sizes if s <= 4] and all(s % 4 == 0 for s in sizes)  # whole streams
    for field in ("w_hat", "b_hat", "train_loss", "val_mse", "grad_w", "grad_b", "ols_w", "ols_b"):
        np.testing.assert_array_equal(getattr(split, field), getattr(whole, field))


def test_auto_on_a_dask_worker_is_its_own_device():
    assert local_device("cpu") == "cpu"
    assert local_device("auto") == ("cuda" if __import__("torch").cuda.is_available() else "cpu")


def test_workers_never_outnumber_the_cores():
    plan = plan_grid(Grid(num_train=[10_000], replicates=4000, epoch=[20]))
    chunks = plan.specs
    work = [plan.seconds(spec, estimated_seconds) for spec in chunks]
    cores = joblib.cpu_count()
    assert len(chunks) > cores
    for n_jobs in (-1, 1, cores, cores + 1, 64):
        assert 1 <= worker_count(n_jobs, ["cpu"], work) <= cores
    assert worker_count(-1, ["cpu"], work) == cores  # a big grid takes every core
    assert worker_count(-1, ["cpu"], [0.1, 0.2]) == 1  # a second's work stays in this process
    assert worker_count(-1, ["cpu"], [0.1, 0.2], start_s=0.0) == min(cores, 2)  # threads start at once


def test_auto_takes_threads_where_every_chunk_trains_compiled_and_worker_processes_elsewhere():
    """Threads where the chunks' training releases the GIL (the compiled loops: plain SGD, the
    counter stream, the batched engine on the CPU); loky wherever a chunk would take the tensor
    path, whose dispatch holds the GIL. A backend named is the one used."""
    plain = Grid(num_train=[20], lr=[0.01, 0.1])
    assert local_backend("auto", plain, "batched", ["cpu"]) == ("threading" if kernels.AVAILABLE else "loky")
    for grid, engine, devices, options in [
        (Grid(num_train=[20], stream="torch"), "batched", ["cpu"], DEFAULT),
        (Grid(num_train=[20], momentum=[0.0, 0.9]), "batched", ["cpu"], DEFAULT),
        (Grid(num_train=[20], average_from=["none", 1]), "batched", ["cpu"], DEFAULT),
        (plain, "reference", ["cpu"], DEFAULT),
        (plain, "batched", ["cuda:0"], DEFAULT),
        (plain, "batched", ["cuda:0", "cuda:1"], DEFAULT),
        (plain, "batched", ["cpu"], Options(compiled=False)),
    ]:
        assert local_backend("auto", grid, engine, devices, options) == "loky", (grid, engine, devices)
    for named in ("loky", "threading", "sequential", "dask"):
        assert local_backend(named, plain, "batched", ["cpu"]) == named


def test_threads_left_early_end_their_chunks_first_and_start_no_other(monkeypatch):
    """A thread cannot be stopped: leaving local_results early (Ctrl-C, SIGTERM) waits for the
    chunks the threads are training, so that the process never exits with one inside torch's or
    Numba's code, and no chunk starts after."""
    import threading
    import time

    from study import dispatch

    lock, active, started = threading.Lock(), [0], []

    def slow(chunk, checkpoints, engine, device, n, options):
        with lock:
            active[0] += 1
            started.append(n)
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return n, None, "slow"

    monkeypatch.setattr(dispatch, "train_chunk", slow)
    grid = Grid(num_train=[20], replicates=12)
    plan = Plan(grid, lambda *_: 2)  # chunks of 2 runs
    jobs = [(Task(i, spec, None, spec.runs, 0.1),) for i, spec in enumerate(plan.specs)]
    assert len(jobs) >= 6
    with dispatch.local_results(plan, jobs, grid.checkpoints, "batched", ["cpu"], "threading", 2) as results:
        next(results)  # one chunk done, others training or queued: leave now
    assert active[0] == 0  # none still training
    count = len(started)
    time.sleep(0.5)
    assert len(started) == count < len(jobs)  # and none started since


def test_a_task_trains_its_runs_and_returns_their_keys_and_measures():
    grid = Grid(num_train=[30], lr=[0.01, 0.1], epoch=[2], replicates=3)
    plan = Plan(grid, lambda *_: 10**6)
    whole = plan.chunk(plan.specs[0])
    rows = np.array([1, 4])
    task = Task(7, plan.specs[0], rows, 2, 0.0)
    n, segment, reason = train_chunk(task.chunk(plan), grid.checkpoints, "batched", "cpu", task.n)
    assert (n, reason) == (7, None)
    np.testing.assert_array_equal(segment.keys, whole.key[rows])
    assert segment.checkpoints == (0, 2)
    from study.engine import train_batched

    expected = metric_columns(train_batched(whole.take(rows), grid.checkpoints), 2)
    assert list(segment.columns) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(segment.columns[name], expected[name])


def test_a_task_that_raises_gives_its_reason_in_one_line(monkeypatch):
    import study.engine

    def broken(runs, checkpoints, device="cpu", options=None):
        raise MemoryError("cannot\nallocate")

    monkeypatch.setattr(study.engine, "train_batched", broken)
    grid = Grid(num_train=[30], epoch=[1])
    plan = Plan(grid, lambda *_: 10**6)
    assert train_chunk(plan.chunk(plan.specs[0]), grid.checkpoints, "batched", "cpu", 3) == (
        3,
        None,
        "MemoryError: cannot allocate",
    )


def test_small_chunks_on_one_cpu_worker_are_bundled_by_batch_size_within_the_bounds():
    plan = Plan(Grid(num_train=[10, 20, 40], batch_size=[8, 16], replicates=2), lambda *_: 10**6)
    specs = plan.specs  # (num_train, batch_size) pairs, batch sizes alternating
    assert [s.batch_size_i for s in specs] == [0, 1, 0, 1, 0, 1]
    tasks = [Task(i, spec, None, 100, 0.1) for i, spec in enumerate(specs)]
    jobs = bundle(tasks, "batched", ["cpu"], 1, None)
    assert [[t.n for t in job] for job in jobs] == [[0, 2, 4], [1, 3, 5]]
    # Within BUNDLE_RUNS runs, BUNDLE_SECONDS seconds and one chunk's memory a bundle, in the tasks' order.
    big = [Task(i, specs[0], None, BUNDLE_RUNS // 2, 0.01) for i in range(5)]
    assert [len(job) for job in bundle(big, "batched", ["cpu"], 1, None)] == [2, 2, 1]
    slow = [Task(i, specs[0], None, 1, BUNDLE_SECONDS * 0.4) for i in range(5)]
    assert [len(job) for job in bundle(slow, "batched", ["cpu"], 1, None)] == [2, 2, 1]
    heavy = [Task(i, specs[0], None, 1, 0.01, CHUNK_MEMORY_BUDGET // 2) for i in range(5)]  # one chunk's budget
    assert [len(job) for job in bundle(heavy, "batched", ["cpu"], 1, None)] == [2, 2, 1]
    # Never with several workers (balance), on a GPU, for the reference engine, or for an asked chunk size.
    for args in (
        (tasks, "batched", ["cpu"], 2, None),
        (tasks, "batched", ["cuda:0"], 1, None),
        (tasks, "reference", ["cpu"], 1, None),
        (tasks, "batched", ["cpu"], 1, 5),
    ):
        assert bundle(*args) == [(t,) for t in tasks]


def test_a_bundle_gives_each_chunk_its_own_segment_and_only_a_chunk_that_raises_alone_fails(monkeypatch):
    import study.engine

    grid = Grid(num_train=[10, 20, 40], lr=[0.01, 0.1], epoch=[2], replicates=2)
    plan = Plan(grid, lambda *_: 10**6)
    chunks = [plan.chunk(spec) for spec in plan.specs]
    n, outcomes, reason = train_chunk(chunks, grid.checkpoints, "batched", "cpu", 4)
    assert (n, reason, len(outcomes)) == (4, None, 3)
    for chunk, segment in zip(chunks, outcomes):
        _, alone, _ = train_chunk(chunk, grid.checkpoints, "batched", "cpu", 0)
        np.testing.assert_array_equal(segment.keys, chunk.key)
        for name in alone.columns:
            np.testing.assert_array_equal(segment.columns[name], alone.columns[name])
    together = study.engine.train_batched_together

    def raise_for_20(chunks, checkpoints, device="cpu", options=None):
        if any(c.num_train == 20 for c in chunks):
            raise RuntimeError("twenty")
        return together(chunks, checkpoints, device)

    monkeypatch.setattr(study.engine, "train_batched_together", raise_for_20)
    _, outcomes, _ = train_chunk(chunks, grid.checkpoints, "batched", "cpu", 4)
    assert outcomes[1] == "RuntimeError: twenty"
    assert not isinstance(outcomes[0], str) and not isinstance(outcomes[2], str)
