"""The path around the engine: writing big tables, growing grids, and a 10M-run grid stopped and resumed.

    python benchmarks/bench_store.py parquet   # 100k runs of W: in memory, to Parquet, to CSV
    python benchmarks/bench_store.py grow      # W at 20 replicates, grown to 40, against 40 fresh
    python benchmarks/bench_store.py big       # 10M runs of W by `study run`, stopped after a minute, resumed
    python benchmarks/bench_store.py summarize # summarize a 6M-row table (100k runs of W, ten times over)
    python benchmarks/bench_store.py assemble  # a 1M-run table of W assembled from its store, training aside

Prints one line per measurement; no timing is asserted anywhere. W is the exercise-5 mix: 11 sizes
from 5 to 10,000, lr 0.01, 0.03, 0.1, squared and Huber, checkpoints at epochs 1, 2, 3, 5, 10.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

W_AXES = (
    'num_train = { log = [5, 10000] }\nlr = [0.01, 0.03, 0.1]\nloss = ["squared", "huber"]\nepoch = [1, 2, 3, 5, 10]\n'
)


def _grid(replicates: int):
    from study.grid import Grid, log_sizes

    return Grid(
        num_train=log_sizes(5, 10_000),
        lr=[0.01, 0.03, 0.1],
        loss=["squared", "huber"],
        epoch=[1, 2, 3, 5, 10],
        replicates=replicates,
        name="W",
    )


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def parquet(replicates: int) -> None:
    """End to end, 100k runs: in memory (the faster of a first and a last call); to Parquet as a
    frame too; to Parquet block by block; to CSV block by block; the same Parquet again."""
    from study.runner import run_grid

    grid = _grid(replicates)
    with tempfile.TemporaryDirectory() as tmp:
        _, memory = _timed(lambda: run_grid(grid, progress=False))
        _, frame = _timed(lambda: run_grid(grid, out=Path(tmp, "a.parquet"), progress=False, resume=False))
        _, stream = _timed(
            lambda: run_grid(grid, out=Path(tmp, "b.parquet"), progress=False, resume=False, frame=False)
        )
        _, csv = _timed(lambda: run_grid(grid, out=Path(tmp, "c.csv"), progress=False, resume=False, frame=False))
        _, again = _timed(lambda: run_grid(grid, out=Path(tmp, "b.parquet"), progress=False, frame=False))
        _, memory_again = _timed(lambda: run_grid(grid, progress=False))  # the first call also started the workers
        memory = min(memory, memory_again)
        size = Path(tmp, "b.parquet").stat().st_size / 1e6
    runs = len(grid.num_train) * 6 * replicates
    print(
        f"{runs:,} runs of W: in memory {memory:.1f} s; to Parquet with the frame {frame:.1f} s "
        f"({frame / memory:.2f}x), block by block {stream:.1f} s ({stream / memory:.2f}x, {size:.0f} MB); "
        f"to CSV block by block {csv:.1f} s; the same Parquet again from the store {again:.1f} s"
    )


def grow() -> None:
    """20 replicates, then 40 on the same output, against 40 fresh: runs trained, time, same table."""
    from study.runner import run_grid

    with tempfile.TemporaryDirectory() as tmp:
        out, fresh = Path(tmp, "grown.parquet"), Path(tmp, "fresh.parquet")
        _, first = _timed(lambda: run_grid(_grid(20), out=out, progress=False))
        _, grown = _timed(lambda: run_grid(_grid(40), out=out, progress=False))
        meta = json.loads(out.with_name("grown.meta.json").read_text())
        _, whole = _timed(lambda: run_grid(_grid(40), out=fresh, progress=False))
        same = out.read_bytes() == fresh.read_bytes()
    print(
        f"W at 20 replicates: {first:.1f} s; grown to 40 on the same output: {grown:.1f} s, "
        f"{meta['runs_computed']:,} runs trained and {meta['runs_reused']:,} reused; 40 fresh: {whole:.1f} s; "
        f"the grown table {'is' if same else 'is NOT'} byte-identical to the fresh one"
    )


def _rss_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of one process, in MB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _session(spec: Path, out: Path, seconds: float) -> dict:
    """`study run` for ``seconds``, then SIGTERM: its first progress line's delay, its lines, the
    peak resident memory of its main process, its exit status."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "study", "run", str(spec), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    def read(stream) -> None:
        for line in stream:
            lines.append((time.monotonic() - started, line.rstrip()))

    readers = [threading.Thread(target=read, args=(s,), daemon=True) for s in (proc.stdout, proc.stderr)]
    for reader in readers:
        reader.start()
    peak = 0.0
    while time.monotonic() - started < seconds and proc.poll() is None:
        try:
            peak = max(peak, _rss_mb(proc.pid)[1])
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    try:
        peak = max(peak, _rss_mb(proc.pid)[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(timeout=120)
    for reader in readers:
        reader.join(timeout=5)
    progress = [t for t, line in lines if line.startswith("study: W:")]
    return {"status": status, "first_progress_s": progress[0] if progress else None, "peak_mb": peak, "lines": lines}


def big(replicates: int, seconds: float) -> None:
    """10M runs of W by `study run` (the CLI a user types), stopped by SIGTERM after ``seconds``,
    then started again on the same output and stopped again."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp, "W.toml")
        spec.write_text(f'name = "W"\n[grid]\n{W_AXES}replicates = {replicates}\n')
        out = Path(tmp, "W.parquet")
        for attempt in ("first start", "resumed"):
            run = _session(spec, out, seconds)
            kept = len(list(Path(tmp, "W.parquet.store").glob("*.runs")))
            print(
                f"{attempt}: exit {run['status']}, first progress after {run['first_progress_s']:.1f} s, "
                f"peak resident memory of the main process {run['peak_mb']:.0f} MB, {kept} chunks kept"
            )
            for t, line in run["lines"]:
                print(f"    {t:6.1f} s  {line}")


def summarize_rows() -> None:
    """summarize on 6 million rows: the 100k-run table of W, ten times over (each copy's
    replicates and seeds shifted, so that its runs and data streams are its own)."""
    import pandas as pd

    from study.runner import run_grid
    from study.summaries import summarize

    base = run_grid(_grid(1516), progress=False)
    copies = []
    for k in range(10):
        copy = base.copy()
        copy["replicate"] += k * 1516
        copy["seed"] += k * 10**15
        copies.append(copy)
    df = pd.concat(copies, ignore_index=True)
    _, every = _timed(lambda: summarize(df))
    _, last = _timed(lambda: summarize(df, by=["num_train", "lr", "loss"]))
    print(
        f"summarize {len(df):,} rows: by every axis that varies and epoch {every:.1f} s; "
        f"by num_train, lr, loss at the last epoch {last:.1f} s"
    )


def assemble(replicates: int) -> None:
    """The table of 1M runs of W (6M rows) assembled from a store, training aside: every run of
    the grid stored under its key with made-up numbers (assembly never looks at them), once cut
    as on a GPU (one chunk per size) and once as on 2 CPU cores (hundreds of chunks); from
    memory (run_grid without an output) and from segment files (with one)."""
    import numpy as np

    from study.dispatch import train_chunk
    from study.plan import Plan
    from study.runner import plan_grid
    from study.store import RunStore, Segment, table_frame

    grid = _grid(replicates)
    C = len(grid.checkpoints)
    # The columns and their dtypes as training gives them: one small chunk trained for real.
    first = Plan(_grid(1), lambda *_: 10**9)
    _, real, _ = train_chunk(first.chunk(first.specs[0]), grid.checkpoints, "batched", "cpu", 0)
    rng = np.random.default_rng(0)
    for label, plan in (("as on a GPU", Plan(grid, lambda *_: 10**9)), ("as on 2 CPU cores", plan_grid(grid, cores=2))):
        segments = []
        for spec in plan.specs:
            keys = plan.chunk(spec).key
            segments.append(
                Segment(
                    keys,
                    tuple(grid.checkpoints),
                    {name: rng.random(len(keys) * C).astype(values.dtype) for name, values in real.columns.items()},
                )
            )
        with tempfile.TemporaryDirectory() as tmp:
            times = []
            for folder in (None, Path(tmp, "W.parquet.store")):
                store = RunStore(folder, engine="batched", stream=grid.stream, checkpoints=grid.checkpoints)
                for i, segment in enumerate(segments):
                    store.add(segment, f"s{i}")
                if folder is not None:  # as a rerun finds it: read from the files
                    store = RunStore(folder, engine="batched", stream=grid.stream, checkpoints=grid.checkpoints)
                tries = []
                for _ in range(3):  # the first in a process also maps its memory: the range is shown
                    df, seconds = _timed(lambda plan=plan, store=store: table_frame(plan, store))
                    tries.append(seconds)
                    del df
                times.append(f"{min(tries):.1f}-{max(tries):.1f} s")
        print(
            f"{plan.n_runs:,} runs of W ({plan.n_runs * C:,} rows), {len(plan.specs)} chunks {label}: "
            f"the table assembled from the store in memory {times[0]}, from its files {times[1]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=["parquet", "grow", "big", "summarize", "assemble"])
    parser.add_argument(
        "--replicates",
        type=int,
        help="W's replicates (66 runs each); default: 1516 for parquet "
        "(100,056 runs), 15152 for assemble (1,000,032 runs), 151516 for big (10,000,056 runs)",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="big: how long each start runs before SIGTERM")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if args.case == "parquet":
        parquet(args.replicates or 1516)
    elif args.case == "grow":
        grow()
    elif args.case == "summarize":
        summarize_rows()
    elif args.case == "assemble":
        assemble(args.replicates or 15_152)
    else:
        big(args.replicates or 151_516, args.seconds)


if __name__ == "__main__":
    main()
