"""The batched engine against the reference loop on the optimiser's axes, on one core.

Workload "optimisers": num_train 200 (ragged minibatches of 32: 200 = 6·32 + 8), lr 0.05, and every
axis added after the first ones varied: num_inputs {2, 20} (w = 1 for every feature) × lr_decay
{0, 0.5} × momentum {0, 0.5} × weight_decay {0, 0.01} × average_from {none, 1} × drop_last
{false, true}, 30 replicates, 5 epochs (1,920 runs, checkpoints at epochs 1, 3, 5). Both engines run the same grid with ``run_grid(..., n_jobs=1,
device="cpu", engine=E)`` in this process, pinned to one CPU with one torch thread; each is
timed 3 times and the best kept (the reference once: it takes
tens of seconds, next to which the machine's noise is small). The reference is the readable loop (torch.optim.SGD, LambdaLR,
AveragedModel, one run at a time); the batched engine must give its numbers run for run
(tests/test_engine.py), so the ratio is the speed-up for the same results.

    python benchmarks/bench_optimisers.py          # prints the two times and their ratio
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from study import Grid, run_grid  # noqa: E402

GRID = Grid(
    num_train=[200],
    num_inputs=[2, 20],
    w=1.0,
    lr=[0.05],
    lr_decay=[0.0, 0.5],
    momentum=[0.0, 0.5],
    weight_decay=[0.0, 0.01],
    average_from=[None, 1],
    drop_last=[False, True],
    epoch=[1, 3, 5],
    replicates=30,
    num_val=100,
    name="optimisers",
)


def best_of(engine: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_grid(GRID, n_jobs=1, device="cpu", engine=engine, progress=False)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    run_grid(GRID, n_jobs=1, device="cpu", progress=False)  # imports and first calls out of the clock
    batched, reference = best_of("batched"), best_of("reference", repeats=1)
    print(
        f"{GRID.n_runs} runs on one core: batched {batched:.3f} s, reference {reference:.3f} s, "
        f"{reference / batched:.0f}x"
    )


if __name__ == "__main__":
    main()
