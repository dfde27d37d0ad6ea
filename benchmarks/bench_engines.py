"""Engine speed and scaling: the reference loop against the batched engine, CPUs and GPUs.

The W mix is exercise 5's axes: log_sizes(5, 10_000) x lr {0.01, 0.03, 0.1} x loss {squared,
huber}, trained to 10 epochs (checkpoints 1, 2, 3, 5, 10), 66 runs a replicate. Workloads:

- "ex5": W with 20 replicates, 1320 runs;
- "100k": W with 1516 replicates, 100,056 runs;
- "1M": W with 15,152 replicates, 1,000,032 runs;
Engines: "reference", "batched" (on a CPU its compiled loops, study.kernels) and
"batched-tensor" (the batched engine with ``Options(compiled=False)``: its tensor path, the same
numbers).

- "1M-onestep": num_train 5, one epoch (one SGD step a run), lr {0.01, 0.03, 0.1} x loss
  {squared, huber} x 166,667 replicates, 1,000,002 runs: what is left when training is nothing,
  the per-run cost of planning, drawing data and making the table.

Each measurement runs in a fresh Python process, so that peak memory is that of the one
measurement; wall time is taken around ``run_grid`` alone (interpreter start and imports
excluded) and the table is kept in memory (no CSV). Peak memory is the largest sum of the
resident sizes of the process and its workers, sampled every 20 ms. ``stream`` is the grid's
random stream (default: the Grid default, ``counter``).

    python benchmarks/bench_engines.py                  # the CPU rows, writes results/benchmarks.csv
    python benchmarks/bench_engines.py --rows gpu       # the GPU rows (needs CUDA)
    python benchmarks/bench_engines.py --rows scaling   # 100k on 1, 2, 4, 8, 16 workers (as the cores allow)
    python benchmarks/bench_engines.py --quick          # the batched CPU rows only (seconds)

No timing is asserted anywhere: this prints and records what it measures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {"ex5": 20, "100k": 1516, "1M": 15_152, "1M-onestep": 166_667}  # replicates


def grid_for(workload: str, stream: str = "counter"):
    from study.grid import Grid, log_sizes

    if workload == "1M-onestep":
        return Grid(
            num_train=[5],
            lr=[0.01, 0.03, 0.1],
            loss=["squared", "huber"],
            epoch=[1],
            replicates=WORKLOADS[workload],
            name=workload,
            stream=stream,
        )
    return Grid(
        num_train=log_sizes(5, 10_000),
        lr=[0.01, 0.03, 0.1],
        loss=["squared", "huber"],
        epoch=[1, 2, 3, 5, 10],
        replicates=WORKLOADS[workload],
        name=workload,
        stream=stream,
    )


def model_steps(grid) -> int:
    """SGD updates summed over runs: each run takes ceil(n / batch_size) per epoch."""
    per_cell = sum(math.ceil(n / grid.batch_size[0]) for n in grid.num_train) * grid.max_epoch
    return per_cell * len(grid.lr) * len(grid.loss) * grid.replicates


def plan_rows(rows: str, quick: bool, cores: int) -> list[tuple]:
    """(workload, engine, jobs, device, stream) of each measurement asked for."""
    if rows == "gpu":
        return [
            ("ex5", "batched", 1, "cuda", "counter"),
            ("100k", "batched", 1, "cuda", "counter"),
            ("100k", "batched-tensor", 1, "cuda", "counter"),
            ("1M", "batched", 1, "cuda", "counter"),
            ("1M", "batched-tensor", 1, "cuda", "counter"),
            ("1M", "batched", 1, "cuda", "counter"),
            ("100k", "batched", cores, "cpu", "counter", True),
        ]
    if rows == "scaling":
        return [("100k", "batched", j, "cpu", "counter", True) for j in (1, 2, 4, 8, 16) if j <= cores]
    plan = []
    if not quick:
        plan += [("ex5", "reference", 1, "cpu", "counter"), ("ex5", "reference", cores, "cpu", "counter")]
    plan += [
        ("ex5", "batched", 1, "cpu", "counter"),
        ("ex5", "batched", 1, "cpu", "torch"),
        ("ex5", "batched", cores, "cpu", "counter"),
        ("100k", "batched", cores, "cpu", "counter"),
        ("100k", "batched", cores, "cpu", "torch"),
        ("1M-onestep", "batched", cores, "cpu", "counter"),
        ("1M-onestep", "batched", cores, "cpu", "torch"),
    ]
    return plan


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(workload: str, engine: str, jobs: int, device: str, stream: str = "counter", warm: bool = False) -> dict:
    """One measurement, in this process (called in a fresh subprocess by main). ``warm``: the
    worker processes are started (a throwaway grid of one-step runs) before the clock, as a
    notebook's second run_grid finds them: what scales with the cores, without the one-off
    start-up of about two seconds."""
    from study.grid import Grid
    from study.options import Options
    from study.runner import run_grid

    grid = grid_for(workload, stream)
    # "batched-tensor": the batched engine with its compiled loops off (its tensor path, as before them)
    options = Options(compiled=engine != "batched-tensor")
    if warm and jobs > 1:
        run_grid(
            Grid(num_train=[5], epoch=[1], replicates=jobs * 1000),
            n_jobs=jobs,
            device=device,
            chunk_size=1000,
            progress=False,
        )
    setup_s = 0.0
    if device.startswith("cuda"):  # CUDA's start-up is the device's, not the grid's: made (and timed) before the clock
        import torch

        started = time.perf_counter()
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
        setup_s = time.perf_counter() - started
    peak = [_tree_rss(os.getpid())]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_rss(os.getpid()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    df = run_grid(grid, n_jobs=jobs, device=device, engine=engine.split("-")[0], progress=False, options=options)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    runs = len(df) // len(grid.checkpoints)
    steps = model_steps(grid)
    return {
        "workload": workload,
        "engine": engine,
        "jobs": jobs,
        "device": device,
        "stream": stream,
        "warm": warm,
        "runs": runs,
        "model_steps": steps,
        "wall_s": round(wall, 3),
        "runs_per_s": round(runs / wall, 1),
        "model_steps_per_s": round(steps / wall),
        "peak_mem_mb": round(peak[0] / 2**20),
        "cuda_init_s": round(setup_s, 2) if device.startswith("cuda") else None,
    }


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        choices=["cpu", "gpu", "scaling"],
        default="cpu",
        help="cpu (default): the engines on this machine's CPUs; gpu: the GPU rows and the same "
        "machine's cores; scaling: 100k on 1, 2, 4, 8, 16 workers",
    )
    parser.add_argument("--quick", action="store_true", help="skip the reference engine (minutes) rows")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks.csv")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement as JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(**json.loads(args.one))))
        return

    cores = os.cpu_count() or 1
    plan = plan_rows(args.rows, args.quick, cores)

    import pandas as pd

    rows = []
    for workload, engine, jobs, device, stream, *warm in plan:
        spec = json.dumps(
            dict(workload=workload, engine=engine, jobs=jobs, device=device, stream=stream, warm=bool(warm and warm[0]))
        )
        done = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            sys.exit(f"measurement {spec} failed:\n{done.stderr}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["machine"] = _device_name(device)
        rows.append(row)
        print(
            f"{workload:>10} {engine:>9} jobs={jobs:<2} {device:>6} {stream:>7}: {row['wall_s']:8.2f} s  "
            f"{row['runs_per_s']:>9} runs/s  {row['model_steps_per_s']:>11} model-steps/s  {row['peak_mem_mb']} MB",
            flush=True,
        )
    table = pd.DataFrame(rows)
    ex5 = table[(table["workload"] == "ex5") & (table["stream"] == "counter")]
    for jobs in sorted(set(ex5["jobs"])):
        pair = ex5[(ex5["jobs"] == jobs) & (ex5["device"] == "cpu")].set_index("engine")["wall_s"]
        if {"reference", "batched"} <= set(pair.index):
            print(f"ex5, {jobs} worker(s): batched is {pair['reference'] / pair['batched']:.0f}x faster than reference")
    scaling = table[
        (table["workload"] == "100k") & (table["device"] == "cpu") & (table["stream"] == "counter") & table["warm"]
    ]
    one = scaling[scaling["jobs"] == 1]["wall_s"]
    if len(one):
        for _, row in scaling.iterrows():
            eff = one.iloc[0] / (row["wall_s"] * row["jobs"])
            print(f"100k on {row['jobs']} worker(s): {row['wall_s']:.2f} s, parallel efficiency {eff:.0%}")
    record(rows, args.out)


#: A row of results/benchmarks.csv is one of these; a new measurement replaces the row of its key.
KEY = ["workload", "engine", "jobs", "device", "stream", "warm", "machine", "revision"]


def record(rows: list[dict], out: Path) -> None:
    """Write ``rows`` into the CSV ``out``, each with its engine's revision (the arithmetic
    timed, study.vocabulary.ENGINE_REVISIONS) and the date, replacing the rows of the same
    key; rows not measured this time (another machine's, an older revision's) are kept."""
    import datetime

    import pandas as pd

    from study.vocabulary import ENGINE_REVISIONS

    table = pd.DataFrame(rows)
    table["revision"] = [ENGINE_REVISIONS.get(e.split("-")[0]) for e in table["engine"]]  # none for a peer
    table["date"] = datetime.date.today().isoformat()
    if out.exists():
        old = pd.read_csv(out)
        if "stream" not in old.columns:  # rows of before the counter stream: the torch stream
            old.insert(4, "stream", "torch")
        for column, value in (("warm", False), ("revision", None), ("date", None)):
            if column not in old.columns:
                old[column] = value
        table = pd.concat([old, table], ignore_index=True)
    table["revision"] = table["revision"].astype("Int64")
    table = table.drop_duplicates(KEY, keep="last")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
