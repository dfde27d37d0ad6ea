"""A peer on one core: the batched engine against scikit-learn's SGDRegressor.

Workload "ex5-1core": exercise 5's grid, log_sizes(5, 10_000) x lr {0.01, 0.03, 0.1} x loss
{squared, huber} x 20 replicates, 10 epochs, d = 2 (w = [2, -3.4], b = 4.2), Gaussian noise
0.01, num_val 1000: 1320 runs. It is bench_engines.py's "ex5", under its own name so that
neither script overwrites the other's rows in results/benchmarks.csv.

Rows (engine column):

- ``batched-tensor``: the same with ``Options(compiled=False)``: the batched engine's tensor
  path, as it ran before its compiled loops (study.kernels), the same numbers.
- ``batched``: ``run_grid(Grid(...), n_jobs=1, device="cpu")`` on W, checkpoints at epochs
  1, 2, 3, 5, 10. Timed around run_grid alone, which includes making each run's data, the
  minibatch SGD (batch size 32), the full-batch checkpoints (training loss, validation MSE,
  gradient) and least squares per data set. When Grid has a ``stream`` field, one row per
  random stream (study.streams.STREAMS), the ``stream`` column saying which.
- ``sklearn-SGDRegressor``: for each run, ``SGDRegressor(loss="squared_error" | "huber"
  (epsilon=1.0), penalty=None, learning_rate="constant", eta0=lr, max_iter=10, tol=None,
  shuffle=True, random_state=replicate, average=False).fit(X, y)``, then its validation MSE
  on 1000 held-out examples. The data (X ~ N(0, I), y = Xw + b + 0.01 eps, float64, one data
  set per (num_train, replicate), shared by the lr and loss of that cell as in the engine)
  are all generated with NumPy before the clock starts: the timed region is the 1320 fits and
  predictions only. That favours SGDRegressor, whose row thus leaves out work that the
  batched row includes; the generation time is printed beside it.

This is a speed comparison only: both do 10 passes over the same amount of data per run, but
not the same arithmetic. SGDRegressor takes one update per example (batch size 1; its
``model_steps`` count those updates, 32 times as many as the engine's minibatch steps), its
squared_error is r²/2, so its squared step is half of MSELoss's (r²), it starts from w = 0 and
works in float64. Its numbers are not comparable with the engine's; its wall time is.

Method: each row is measured in a fresh Python process pinned to one CPU
(os.sched_setaffinity), with OMP/MKL/OPENBLAS/NUMEXPR threads set to 1 in its environment
before NumPy, SciPy, scikit-learn or torch are imported, threadpoolctl limits (when installed)
and torch.set_num_threads(1). Each measurement is repeated 3 times in that process and the
best (smallest) wall time is kept; interpreter start, imports and data generation are
excluded. Peak memory is the process's resident high-water mark (getrusage ru_maxrss),
imports included.

    python benchmarks/bench_peers.py                       # appends to results/benchmarks.csv
    python benchmarks/bench_peers.py --no-write            # prints only
    python benchmarks/bench_peers.py --out /tmp/bench.csv

``peer_rows()`` returns the rows (a list of dicts) for another script. scikit-learn is needed
(``pip install scikit-learn``). No timing is asserted anywhere: this prints and records what it
measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = "ex5-1core"
SIZES = [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]  # study.grid.log_sizes(5, 10_000)
LRS = [0.01, 0.03, 0.1]
LOSSES = {"squared": "squared_error", "huber": "huber"}  # ours -> SGDRegressor's
REPLICATES, EPOCHS, BATCH, NUM_VAL, NOISE = 20, 10, 32, 1000, 0.01
W_TRUE, B_TRUE = [2.0, -3.4], 4.2
REPEATS = 3
SKLEARN = "sklearn-SGDRegressor"
#: Set in the measuring process's environment, so that they hold before any library loads.
ONE_THREAD_ENV = {
    k: "1"
    for k in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    )
}


def _pin_one_cpu() -> None:
    """Pin this process (and the threads it will start) to one CPU, where the OS allows it."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _thread_limits():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _peak_mb() -> int:
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return round(kb * (1 if sys.platform.startswith("linux") else 1 / 1024) / 1024)


def _row(engine: str, stream: str | None, runs: int, steps: int, wall: float) -> dict:
    return {
        "workload": WORKLOAD,
        "engine": engine,
        "jobs": 1,
        "device": "cpu",
        "runs": runs,
        "model_steps": steps,
        "wall_s": round(wall, 3),
        "runs_per_s": round(runs / wall, 1),
        "model_steps_per_s": round(steps / wall),
        "peak_mem_mb": _peak_mb(),
        "stream": stream,
    }


def grid_streams() -> list[str | None]:
    """The random streams to measure the batched engine with: [None] when Grid has no
    ``stream`` field, else every value study.streams.STREAMS lists."""
    from dataclasses import fields

    from study.grid import Grid

    if "stream" not in {f.name for f in fields(Grid)}:
        return [None]
    try:
        from study.vocabulary import STREAMS
    except ImportError:
        STREAMS = ("counter", "torch")
    return list(STREAMS)


def measure_batched(stream: str | None, repeats: int, compiled: bool = True) -> dict:
    import torch

    from study.grid import Grid, log_sizes
    from study.options import Options
    from study.runner import run_grid

    torch.set_num_threads(1)
    extra = {} if stream is None else {"stream": stream}
    grid = Grid(
        num_train=log_sizes(5, 10_000),
        lr=LRS,
        loss=list(LOSSES),
        epoch=[1, 2, 3, 5, EPOCHS],
        replicates=REPLICATES,
        name="W",
        **extra,
    )
    assert grid.num_train == SIZES and grid.batch_size == [BATCH] and grid.num_val == NUM_VAL
    best = math.inf
    with _thread_limits():
        for _ in range(repeats):
            start = time.perf_counter()
            df = run_grid(grid, n_jobs=1, device="cpu", progress=False, options=Options(compiled=compiled))
            best = min(best, time.perf_counter() - start)
    runs = len(df) // len(grid.checkpoints)
    steps = sum(math.ceil(n / BATCH) for n in SIZES) * EPOCHS * len(LRS) * len(LOSSES) * REPLICATES
    return _row("batched" if compiled else "batched-tensor", stream, runs, steps, best)


def measure_sklearn(repeats: int) -> dict:
    import warnings

    import numpy as np
    from sklearn.linear_model import SGDRegressor

    # Every data set first, outside the clock: one per (num_train, replicate), shared by the
    # six (lr, loss) runs of the cell, as the engine shares its data (common random numbers).
    start = time.perf_counter()
    w, data = np.array(W_TRUE), []
    for n in SIZES:
        for rep in range(REPLICATES):
            rng = np.random.default_rng([rep, n])
            X = rng.standard_normal((n + NUM_VAL, len(w)))
            y = X @ w + B_TRUE + NOISE * rng.standard_normal(n + NUM_VAL)
            data.append((rep, X[:n], y[:n], X[n:], y[n:]))
    generation = time.perf_counter() - start

    best, val_mse = math.inf, []
    with _thread_limits(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # counted and printed: an overflow would be worth knowing
        for _ in range(repeats):
            val_mse = []
            start = time.perf_counter()
            for rep, X, y, X_val, y_val in data:
                for loss in LOSSES.values():
                    for lr in LRS:
                        model = SGDRegressor(
                            loss=loss,
                            epsilon=1.0,
                            penalty=None,
                            learning_rate="constant",
                            eta0=lr,
                            max_iter=EPOCHS,
                            tol=None,
                            shuffle=True,
                            random_state=rep,
                            average=False,
                        ).fit(X, y)
                        val_mse.append(float(np.mean((model.predict(X_val) - y_val) ** 2)))
            best = min(best, time.perf_counter() - start)
    runs = len(val_mse)
    steps = sum(SIZES) * EPOCHS * len(LRS) * len(LOSSES) * REPLICATES  # one update per example
    row = _row(SKLEARN, None, runs, steps, best)
    row["_data_s"] = round(generation, 3)  # not a CSV column: printed beside the row
    row["_median_val_mse"] = float(np.median(val_mse))
    row["_warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    return row


def measure(engine: str, stream: str | None = None, repeats: int = REPEATS) -> dict:
    """One row, measured in this process (called in a fresh subprocess by peer_rows)."""
    _pin_one_cpu()
    if engine in ("batched", "batched-tensor"):
        return measure_batched(stream, repeats, compiled=engine == "batched")
    return measure_sklearn(repeats)


def _machine() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_engines import _device_name  # one way to name the machine, in both scripts

    return _device_name("cpu")


def _spawn(spec: dict) -> dict:
    env = {**os.environ, **ONE_THREAD_ENV}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer_rows(repeats: int = REPEATS, verbose: bool = False) -> list[dict]:
    """The rows of this benchmark: SGDRegressor, then the batched engine (one per stream), each
    measured in its own one-core process; columns as in results/benchmarks.csv, plus ``stream``."""
    specs = [{"engine": SKLEARN}] + [{"engine": "batched", "stream": s} for s in grid_streams()]
    specs.append({"engine": "batched-tensor", "stream": grid_streams()[0]})  # its compiled loops off
    machine, rows = _machine(), []
    for spec in specs:
        row = _spawn({**spec, "repeats": repeats})
        extras = {k: row.pop(k) for k in list(row) if k.startswith("_")}
        row["machine"] = machine
        rows.append(row)
        if verbose:
            label = row["engine"] + (f" (stream={row['stream']})" if row["stream"] else "")
            note = (
                f"  (+{extras['_data_s']:.2f} s data generation, untimed; median val MSE "
                f"{extras['_median_val_mse']:.3g}; warnings: {extras['_warnings'] or 'none'})"
                if extras
                else ""
            )
            print(
                f"{WORKLOAD} {label:>28} jobs=1 cpu: {row['wall_s']:8.3f} s  {row['runs_per_s']:>8} runs/s  "
                f"{row['model_steps_per_s']:>10} model-steps/s  {row['peak_mem_mb']} MB{note}",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks.csv")
    parser.add_argument("--no-write", action="store_true", help="print the rows, write nothing")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="best of this many (default 3)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement as JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(**json.loads(args.one))))
        return

    rows = peer_rows(args.repeats, verbose=True)
    peer = next(r for r in rows if r["engine"] == SKLEARN)
    for row in rows:
        if row["engine"].startswith("batched"):
            which = f" (stream={row['stream']})" if row["stream"] else ""
            ratio = peer["wall_s"] / row["wall_s"]
            verdict = f"{ratio:.1f}x faster than" if ratio >= 1 else f"{1 / ratio:.1f}x slower than"
            print(f"W on one core: {row['engine']}{which} is {verdict} SGDRegressor")
    if args.no_write:
        return

    from bench_engines import record  # the other rows (bench_engines.py's) are kept; ours replaced

    record(rows, args.out)


if __name__ == "__main__":
    main()
