"""From a big table to a conclusion: `study table` and `study plot` on millions of runs, against
DuckDB's and Polars' own queries for the same statistics (and, with --pandas, the old path:
the whole table read into pandas).

    python benchmarks/bench_analysis.py make 5000000 DIR   # W at about 5M runs by `study run`: DIR/W.parquet
    python benchmarks/bench_analysis.py table DIR/W.parquet [--pandas]   # with and without --precision
    python benchmarks/bench_analysis.py plot DIR/W.parquet
    python benchmarks/bench_analysis.py small              # the exercises' size: a 20k-run table, both paths

W is the exercise-5 mix (see bench_store.py): 66 cells, checkpoints 0, 1, 2, 3, 5, 10, so 5M runs
are 30M rows (about 2.6 GB of Parquet). Every measurement runs in a fresh process, timed as a
whole by /usr/bin/time (wall seconds and peak resident memory). The rows go to
results/benchmarks.csv (see bench_engines.record); no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W_AXES = (
    'num_train = { log = [5, 10000] }\nlr = [0.01, 0.03, 0.1]\nloss = ["squared", "huber"]\nepoch = [1, 2, 3, 5, 10]\n'
)
CELLS = 66
BY = "num_train,lr,loss"
EPOCH = 10

#: DuckDB's own statistics, hand-written: the same cells, counts, means, medians, 10% and 90%
#: quantiles of SGD's errors over the runs that did not diverge, and least squares once per
#: data stream, as `study table --by num_train,lr,loss --epoch 10` computes them.
DUCKDB = """
import duckdb, sys
con = duckdb.connect()
src = f"read_parquet('{sys.argv[1]}')"
sgd = ["w_err_norm", "abs(b_err)", "gap_w_norm", "val_mse"]
ols = ["ols_w_err_norm", "abs(ols_b_err)"]
stats = lambda v, c: f"avg({v}) FILTER ({c}), quantile_cont({v}, [0.5, 0.1, 0.9]) FILTER ({c})"
a = con.execute(f"SELECT num_train, lr, loss, count(*), count(*) FILTER (diverged), count(DISTINCT seed), "
                + ", ".join(stats(v, "NOT diverged") for v in sgd)
                + f" FROM {src} WHERE epoch = 10 GROUP BY ALL").fetchall()
firsts = ", ".join(f"min({v}) AS m{i}" for i, v in enumerate(ols))
b = con.execute(f"SELECT num_train, lr, loss, " + ", ".join(stats(f"m{i}", "TRUE") for i in range(len(ols)))
                + f" FROM (SELECT num_train, lr, loss, seed, {firsts} FROM {src} WHERE epoch = 10 GROUP BY ALL) "
                "GROUP BY ALL").fetchall()
print(len(a), len(b))
"""

#: The same in Polars, with its streaming engine.
POLARS = """
import polars as pl, sys
t = pl.scan_parquet(sys.argv[1]).filter(pl.col("epoch") == 10)
keys = ["num_train", "lr", "loss"]
ok = ~pl.col("diverged")
def stats(e, keep):
    return [e.filter(keep).mean().alias(f"{e.meta.output_name()}_mean")] + [
        e.filter(keep).quantile(q, interpolation="linear").alias(f"{e.meta.output_name()}_{q}") for q in (0.5, 0.1, 0.9)]
sgd = [pl.col("w_err_norm"), pl.col("b_err").abs(), pl.col("gap_w_norm"), pl.col("val_mse")]
a = t.group_by(keys).agg([pl.len(), ok.not_().sum(), pl.col("seed").n_unique(),
                          *[s for e in sgd for s in stats(e, ok)]]).collect(engine="streaming")
per = t.group_by([*keys, "seed"]).agg(pl.col("ols_w_err_norm").min(), pl.col("ols_b_err").abs().min())
b = per.group_by(keys).agg([s for c in ("ols_w_err_norm", "ols_b_err") for s in stats(pl.col(c), pl.lit(True))]
                           ).collect(engine="streaming")
print(a.height, b.height)
"""

#: The old path, for the record: the whole table into pandas, then the same statistics.
PANDAS = """
import sys, pandas as pd, numpy as np
df = pd.read_parquet(sys.argv[1])
at = df[df["epoch"] == 10]
ok = at[~at["diverged"]].assign(b_err_abs=lambda d: d["b_err"].abs())
g = ok.groupby(["num_train", "lr", "loss"], observed=True)[["w_err_norm", "b_err_abs", "gap_w_norm", "val_mse"]]
print(len(g.mean()), len(g.quantile([0.5, 0.1, 0.9])))
"""


def timed(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak resident MB, stdout) of a command run as a process of its own."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        done = subprocess.run(
            ["/usr/bin/time", "-o", report.name, "-f", "%e %M", *command],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[:4]} failed:\n{done.stderr[-2000:]}")
        wall, kb = report.read().split()[-2:]
    return float(wall), int(kb) / 1024, done.stdout


def make(runs: int, folder: Path) -> Path:
    """W at ``runs`` runs (rounded to whole replicates), by `study run`, into folder/W.parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "W.toml"
    spec.write_text(f'name = "W"\n[grid]\n{W_AXES}replicates = {-(-runs // CELLS)}\n')
    out = folder / "W.parquet"
    wall, peak, _ = timed([sys.executable, "-m", "study", "run", str(spec), "--out", str(out), "--quiet"])
    print(f"made {out} ({out.stat().st_size / 1e9:.2f} GB) in {wall:.0f} s, peak {peak:.0f} MB")
    return out


def _rows_of(path: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    return meta.num_rows, meta.num_rows // 6


def _row(workload: str, engine: str, runs: int, wall: float, peak: float) -> dict:
    from bench_engines import _device_name

    return {
        "workload": workload,
        "engine": engine,
        "jobs": os.cpu_count(),
        "device": "cpu",
        "stream": "counter",
        "warm": False,
        "runs": runs,
        "wall_s": round(wall, 3),
        "peak_mem_mb": round(peak),
        "machine": _device_name("cpu"),
    }


def table(path: Path, pandas: bool) -> list[dict]:
    rows, runs = _rows_of(path)
    workload = f"table {runs / 1e6:.0f}M ({rows / 1e6:.0f}M rows)"
    study = [sys.executable, "-m", "study", "table", str(path), "--by", BY, "--epoch", str(EPOCH)]
    measured = []
    for engine, command in (
        ("study table", study),
        ("study table --precision", [*study, "--precision"]),
        ("duckdb", [sys.executable, "-c", DUCKDB, str(path)]),
        ("polars", [sys.executable, "-c", POLARS, str(path)]),
        *((("pandas", [sys.executable, "-c", PANDAS, str(path)]),) if pandas else ()),
    ):
        try:
            wall, peak, _ = timed(command)
        except (RuntimeError, FileNotFoundError) as err:
            print(f"{engine}: {err}")
            continue
        measured.append(_row(workload, engine, runs, wall, peak))
        print(f"{workload}: {engine} {wall:.2f} s, peak {peak:.0f} MB")
    by = {r["engine"]: r for r in measured}
    if "study table" in by and "duckdb" in by:
        print(f"study table / DuckDB's own query: {by['study table']['wall_s'] / by['duckdb']['wall_s']:.2f}x")
    if "study table" in by and "study table --precision" in by:
        print(f"--precision / without: {by['study table --precision']['wall_s'] / by['study table']['wall_s']:.2f}x")
    return measured


def plot(path: Path) -> list[dict]:
    rows, runs = _rows_of(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "W.png")
        wall, peak, _ = timed(
            [
                sys.executable,
                "-m",
                "study",
                "plot",
                str(path),
                "--figure",
                "error-vs-num_train",
                "--epoch",
                str(EPOCH),
                "--out",
                str(out),
            ]
        )
    print(f"study plot, {runs:,} runs ({rows:,} rows), one faceted figure: {wall:.2f} s, peak {peak:.0f} MB")
    return [_row(f"plot {runs / 1e6:.0f}M ({rows / 1e6:.0f}M rows)", "study plot", runs, wall, peak)]


def small() -> list[dict]:
    """The exercises' size (a 20k-run table of W, 120k rows): study table and study plot."""
    with tempfile.TemporaryDirectory() as tmp:
        path = make(20_000, Path(tmp))
        measured = []
        for name, command in (
            ("study table", ["table", str(path), "--by", BY]),
            ("study plot", ["plot", str(path), "--figure", "error-vs-num_train", "--out", str(Path(tmp, "s.png"))]),
        ):
            wall, peak, _ = timed([sys.executable, "-m", "study", *command])
            print(f"{name} on {path.name}, 20k runs: {wall:.2f} s, peak {peak:.0f} MB")
            measured.append(_row("small (20k runs)", name, 20_000, wall, peak))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(
        description=textwrap.dedent(__doc__), formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("what", choices=["make", "table", "plot", "small"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--pandas", action="store_true", help="also the old path (75 s and 15 GB at 5M runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks.csv")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.what == "make":
        make(int(args.args[0]), Path(args.args[1]))
        return
    measured = {
        "table": lambda: table(Path(args.args[0]), args.pandas),
        "plot": lambda: plot(Path(args.args[0])),
        "small": small,
    }[args.what]()
    from bench_engines import record

    record(measured, args.out)
    print(json.dumps(measured, indent=1))


if __name__ == "__main__":
    main()
