"""The compiled step loops (study.kernels) against scikit-learn and the engine's own tensor path,
side by side in one run: issue 22's three CPU targets.

1. W on one pinned core (bench_peers.py's workload, best of 3 in a fresh one-thread process
   each): the batched engine with the counter stream against scikit-learn's SGDRegressor
   measured in the same run. Target: >= 10x.
2. 1M one-step runs on 2 cores (bench_engines.py's "1M-onestep", cold: worker start-up
   included) against SGDRegressor's per-fit cost on W spread over the same 2 cores (its W wall
   time / 1,320 fits x 1,000,002 / 2). Target: >= 50x.
3. 100k W runs on 2 cores (bench_engines.py's "100k", cold; each engine's fastest of
   ``--repeats`` runs, the engines in turn), the compiled loops against the
   engine's tensor path (``Options(compiled=False)``) and, with ``--before DIR``, against the
   engine of a checkout from before the issue (``git worktree add DIR 4141065``: the tensor path
   with its Philox words as tensor operations too, "today's engine" when the issue was filed).
   Target: >= 4x.

Every row goes to results/benchmarks.csv (engine "batched" is the compiled path on a CPU,
"batched-tensor" the tensor path). Nothing is asserted: this prints and records what it
measures. It takes about five minutes on this project's 2-core machine.

    python benchmarks/bench_compiled.py
    python benchmarks/bench_compiled.py --skip-100k     # targets 1 and 2 only (about a minute)
    python benchmarks/bench_compiled.py --before /tmp/before   # target 3 against the engine before the issue
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_engines import _device_name, record  # noqa: E402
from bench_peers import SKLEARN, _machine, _spawn  # noqa: E402


def _engine_row(workload: str, engine: str, jobs: int, checkout: Path | None = None) -> dict:
    """One row of bench_engines.py, in a fresh process; with ``checkout``, that checkout's engine
    (its own bench_engines.py, its package first on the path), recorded as "<engine>-before"."""
    spec = json.dumps(dict(workload=workload, engine=engine, jobs=jobs, device="cpu", stream="counter", warm=False))
    root = checkout or ROOT
    env = {**os.environ, "PYTHONPATH": str(root)} if checkout else None
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_engines.py"), "--one", spec],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
    )
    if done.returncode != 0:
        sys.exit(f"measurement {spec} failed:\n{done.stderr}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["machine"] = _device_name("cpu")
    if checkout:
        row["engine"] = engine = f"{engine}-before"
    print(
        f"{workload:>10} {engine:>14} jobs={jobs}: {row['wall_s']:8.2f} s  {row['runs_per_s']:>10} runs/s", flush=True
    )
    return row


def _verdict(ratio: float, target: float) -> str:
    return f"{ratio:.1f}x (target >= {target:g}x: {'met' if ratio >= target else 'not met'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-100k", action="store_true", help="leave out target 3 (minutes of the tensor path)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks.csv")
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of the engine before the issue (4141065): target 3 is measured against it too",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="target 3: runs of each engine, in turn; the fastest of each is compared and recorded",
    )
    args = parser.parse_args()

    machine, rows = _machine(), []
    for spec in (
        {"engine": SKLEARN},
        {"engine": "batched", "stream": "counter"},
        {"engine": "batched-tensor", "stream": "counter"},
    ):
        row = {k: v for k, v in _spawn({**spec, "repeats": 3}).items() if not k.startswith("_")}
        row["machine"] = machine
        rows.append(row)
        print(f"{'W':>10} {row['engine']:>14} jobs=1: {row['wall_s']:8.3f} s (one pinned core, best of 3)", flush=True)
    peer, compiled_w, tensor_w = (r["wall_s"] for r in rows)
    per_fit = peer / rows[0]["runs"]

    onestep = [_engine_row("1M-onestep", engine, 2) for engine in ("batched", "batched-tensor")]
    rows += onestep
    peer_1m = per_fit * onestep[0]["runs"] / 2

    print(f"\non {machine}:")
    print(f"1. W on one core, counter stream: {_verdict(peer / compiled_w, 10)} SGDRegressor's {peer:.3f} s")
    print(f"   (the tensor path: {peer / tensor_w:.1f}x; compiled over tensor: {tensor_w / compiled_w:.1f}x)")
    print(
        f"2. 1M one-step runs on 2 cores: {onestep[0]['wall_s']:.2f} s, {_verdict(peer_1m / onestep[0]['wall_s'], 50)} "
        f"SGDRegressor's per-fit cost on 2 cores ({per_fit * 1e3:.3f} ms a fit: {peer_1m:.0f} s); the tensor path "
        f"{onestep[1]['wall_s']:.2f} s ({peer_1m / onestep[1]['wall_s']:.0f}x)"
    )
    if not args.skip_100k:
        # Each engine's fastest of --repeats runs, the engines in turn: this machine's speed
        # drifts by a third within minutes, so that one run each compared the moments more
        # than the engines.
        engines = [("batched", None), ("batched-tensor", None)] + ([("batched", args.before)] if args.before else [])
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for engine, checkout in engines:
                row = _engine_row("100k", engine, 2, checkout)
                if row["engine"] not in best or row["wall_s"] < best[row["engine"]]["wall_s"]:
                    best[row["engine"]] = row
        w100k = list(best.values())
        rows += w100k
        ratio = w100k[1]["wall_s"] / w100k[0]["wall_s"]
        print(
            f"3. 100k W runs on 2 cores: {w100k[0]['wall_s']:.2f} s against {w100k[1]['wall_s']:.2f} s (the tensor "
            f"path): {_verdict(ratio, 4)}"
        )
        if args.before:
            before = w100k[2]["wall_s"] / w100k[0]["wall_s"]
            print(
                f"   against the engine before the issue ({args.before}): {w100k[2]['wall_s']:.2f} s: {_verdict(before, 4)}"
            )
    record(rows, args.out)


if __name__ == "__main__":
    main()
