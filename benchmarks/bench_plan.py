"""Planning a big grid: the time and memory to plan the W mix at 10 million runs and name every
chunk (each chunk is made, its run keys hashed, and dropped), on this machine's CPUs.

    python benchmarks/bench_plan.py [--replicates 151516]

Prints the runs, the chunks, the seconds and the peak resident memory of this process. No timing
is asserted anywhere.
"""

from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=151_516, help="66 runs each (default: 10,000,056 runs)")
    args = parser.parse_args()
    from study.grid import Grid, log_sizes
    from study.runner import chunk_id, plan_grid

    grid = Grid(
        num_train=log_sizes(5, 10_000),
        lr=[0.01, 0.03, 0.1],
        loss=["squared", "huber"],
        epoch=[1, 2, 3, 5, 10],
        replicates=args.replicates,
    )
    started = time.perf_counter()
    plan = plan_grid(grid, devices=["cpu"])
    ids = [chunk_id(plan.chunk(spec), grid.checkpoints, "batched") for spec in plan.specs]
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{plan.n_runs:,} runs in {len(ids):,} chunks planned and named in {wall:.2f} s; peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
