"""How well run_grid's chunks balance over k workers, apart from the hardware.

Parallel efficiency on k cores, T1 / (k Tk), loses to two things: the schedule (a worker idle
while another finishes a large chunk, the parent's serial work) and the hardware (shared memory
bandwidth, hyperthreads, a lower clock with every core busy). This measures the first alone:
every chunk of the grid as planned for k cores is timed on one core, one after the other, then
handed out as run_grid hands them out (largest estimate first, each to the first idle worker).
The schedule's efficiency is sum(times) / (k x the last worker's finish). Cutting the grid
finer for k workers also adds chunks' fixed costs: the one-worker plan's chunks are timed too,
and its total over k x the finish is the efficiency against what one worker would take (as
bench_engines.py --rows scaling measures it). A machine's measured efficiency below that is the
hardware's.

    python benchmarks/bench_balance.py [WORKLOAD] [--workers 16]   # WORKLOAD: ex5, 100k (default)

Prints only. Also prints the estimate's error per chunk (study.engine.estimated_seconds), which
sets the order.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", nargs="?", default="100k", choices=["ex5", "100k"])
    parser.add_argument("--workers", type=int, default=16, help="the k to plan and schedule for (default 16)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from bench_engines import grid_for

    from study.engine import estimated_seconds, train_batched
    from study.runner import plan_grid

    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    grid = grid_for(args.workload)

    def timed(plan) -> list[float]:
        took = []
        for spec in plan.specs:
            chunk = plan.chunk(spec)
            start = time.perf_counter()
            train_batched(chunk, grid.checkpoints)
            took.append(time.perf_counter() - start)
        return took

    one_worker = sum(timed(plan_grid(grid, cores=1)))
    plan = plan_grid(grid, cores=args.workers)
    estimate = [plan.seconds(spec, estimated_seconds) for spec in plan.specs]
    order = sorted(range(len(plan.specs)), key=lambda i: -estimate[i])  # as run_grid hands them out
    took = dict(enumerate(timed(plan)))
    total = sum(took.values())
    print(f"{args.workload}: {len(plan.specs)} chunks planned for {args.workers} workers, {total:.2f} s on one core")
    k = args.workers
    free = [0.0] * k
    for i in order:
        free[free.index(min(free))] += took[i]
    print(
        f"  on {k} workers the last would finish at {max(free):.2f} s, ideal {total / k:.2f} s: "
        f"the schedule's efficiency {total / k / max(free):.1%}"
    )
    print(
        f"  the one-worker plan's {len(plan_grid(grid, cores=1).specs)} chunks take {one_worker:.2f} s: against it, "
        f"{one_worker / k / max(free):.1%} (this machine's noise, a few %, included)"
    )
    ratio = np.array([took[i] / estimate[i] for i in order])
    print(
        f"  measured / estimated seconds per chunk: min {ratio.min():.2f}, median {np.median(ratio):.2f}, "
        f"max {ratio.max():.2f}"
    )


if __name__ == "__main__":
    main()
