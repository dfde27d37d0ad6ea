"""Where a GPU's time goes on a workload: torch.profiler around one run_grid, by operator.

Launch overhead or arithmetic? Before cutting per-step launches (CUDA graphs, torch.compile),
this says which it is: the wall time against the GPU's busy time (the sum of its kernels'
times), and the operators that take the most GPU time (the SGD steps' mul/addcmul/clamp/add,
the permutations' sort, the gathers, the checkpoints, drawing the data).

    PYTHONPATH=. python benchmarks/profile_gpu.py [WORKLOAD] [--rows 25]   # WORKLOAD: ex5, 100k, 1M (default)
    PYTHONPATH=. python benchmarks/profile_gpu.py ex5 --device cpu          # the same table for one CPU core
    PYTHONPATH=. python benchmarks/profile_gpu.py 1M --host                 # the host's Python functions (cProfile)

``--host`` answers the other question, once the GPU waits on the host: which of the host's
functions (planning, drawing, copying results back, the table) hold it up.

Prints only; records nothing (the profiler slows the run, so its wall time is not a benchmark).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", nargs="?", default="1M", choices=["ex5", "100k", "1M"])
    parser.add_argument("--rows", type=int, default=25, help="operators to list (default 25)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--host", action="store_true", help="the host's functions by cProfile, not the operators")
    args = parser.parse_args()

    import torch
    from bench_engines import grid_for
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from study.runner import run_grid

    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("profile_gpu.py: no CUDA GPU here (--device cpu profiles one CPU core)")
    if gpu:
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
    grid = grid_for(args.workload)
    if args.host:
        import cProfile
        import pstats

        with cProfile.Profile() as host:
            start = time.perf_counter()
            run_grid(grid, n_jobs=1, device=args.device, progress=False)
            wall = time.perf_counter() - start
        print(f"{args.workload} on {args.device}: {grid.n_runs:,} runs, {wall:.2f} s wall under cProfile")
        stats = pstats.Stats(host)
        stats.sort_stats("tottime").print_stats(args.rows)
        stats.sort_stats("cumulative").print_stats(args.rows)
        return
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
        start = time.perf_counter()
        run_grid(grid, n_jobs=1, device=args.device, progress=False)
        if gpu:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    line = f"{args.workload} on {args.device}: {grid.n_runs:,} runs, {wall:.2f} s wall under the profiler"
    if gpu:
        # The column is "device" time in recent torch, "cuda" time in older releases.
        key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
        # The GPU's busy time: the kernels' own rows (an operator's row counts its kernels again).
        busy = sum(getattr(e, key) for e in events if e.device_type != DeviceType.CPU) / 1e6
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel"))
        line += f", GPU busy {busy:.2f} s ({busy / wall:.0%}), {launches:,} kernel launches"
    else:
        key = "self_cpu_time_total"
    print(line)
    print(events.table(sort_by=key, row_limit=args.rows))


if __name__ == "__main__":
    main()
