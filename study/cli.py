"""The ``study`` command: run | table | plot | exercises | demo.

Exit status: 0 on success, 2 for bad input (a one-line message, no traceback, nothing
written), 1 for a failure at run time, 130 when interrupted (Ctrl-C), 143 when terminated
(SIGTERM, what a batch system sends at its time limit: handled as Ctrl-C is, finished work kept).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Sequence

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that it stops the same way: the chunks in
    flight are cancelled, the finished ones are kept."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs (in the main thread), SIGTERM raises Terminated; then as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(err: KeyboardInterrupt) -> tuple[str, int]:
    """What a stop is called, and its exit status."""
    return ("terminated", EXIT_TERMINATED) if isinstance(err, Terminated) else ("interrupted", EXIT_INTERRUPTED)
#: Failed chunks listed one per line; past this many, a count of the others.
_MAX_FAILURES_SHOWN = 10


class _Parser(argparse.ArgumentParser):
    """argparse, with its complaints on one line (it prints the usage block otherwise)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse echoes what was typed: a control character in it (a stray \r) would break
        # the one line, so such characters are shown escaped.
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        raise _UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


class _UsageError(Exception):
    pass


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or -1, got {text!r}") from None
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or -1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _build_parser() -> _Parser:
    from .vocabulary import BACKENDS, DEFAULT_CHUNK_TIMEOUT, ENGINES

    parser = _Parser(prog="study", description="Estimation error of minibatch SGD on d2l's concise linear regression.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train every run of a TOML grid and write the tidy CSV")
    run.add_argument("spec", type=Path, help="the TOML spec (see experiments/)")
    run.add_argument("--out", type=Path, help="output table, .csv or .parquet (default: results/raw/NAME.csv, or "
                     f"NAME.parquet past {CSV_MAX_ROWS:,} rows)")
    run.add_argument("--jobs", type=_positive_int, default=-1, help="workers (-1: all cores, or one per GPU)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    run.add_argument("--engine", choices=ENGINES, default="batched")
    run.add_argument("--backend", choices=BACKENDS, default="loky",
                     help="a joblib backend, or dask: a Dask cluster (--scheduler), else a local one")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="with --backend dask: tcp://HOST:PORT of a running `dask scheduler`, or its scheduler file")
    run.add_argument("--chunk-timeout", type=_seconds, metavar="SECONDS",
                     help=f"with --backend dask: give up a chunk after this long on the cluster "
                          f"(default {DEFAULT_CHUNK_TIMEOUT:g})")
    run.add_argument("--chunk-size", type=_positive_int, default=None, help="at most this many runs per chunk, rounded down to whole streams (at least one)")
    run.add_argument("--fresh", action="store_true",
                     help="empty the store of finished runs kept beside the output (OUT.store/) and train every run")
    run.add_argument("--dry-run", action="store_true",
                     help="print the runs, rows, chunks, devices, an estimate of the time and the CSV's size; run nothing")
    run.add_argument("--quiet", action="store_true", help="no progress bar, no summary")

    table = sub.add_parser("table", help="per-cell summary of a results CSV")
    table.add_argument("csv", type=Path)
    table.add_argument("--by", help="comma-separated columns that define a cell (default: the axes that vary)")
    table.add_argument("--out", type=Path, help="write the full summary (all statistics) to this .csv or .parquet")

    exercises = sub.add_parser("exercises", help="answer the section's five exercises: tables, figures, answers")
    exercises.add_argument("--quick", action="store_true", help="smaller grids, in seconds (into exercises-quick/)")
    exercises.add_argument("--only", help="comma-separated exercise numbers (default: all five)")
    exercises.add_argument("--out-dir", type=Path, help="where results/ and figures/ go (default: '.', or exercises-quick/)")
    exercises.add_argument("--jobs", type=_positive_int, default=-1, help="workers (-1: as many as pay off)")
    exercises.add_argument("--quiet", action="store_true", help="no progress bars, no report")

    plot = sub.add_parser("plot", help="draw a figure from a results CSV (PNG and SVG)")
    plot.add_argument("csv", type=Path)
    plot.add_argument("--figure", required=True, help="error-vs-num_train | error-vs-epoch | error-vs-lr | heatmap, or an "
                      "exercise's figure (ex1_reduction, ..., ex5_data_size) drawn from its raw table")
    plot.add_argument("--y", default="w_err_norm", help="the error column to draw (default: w_err_norm)")
    plot.add_argument("--hue", help="the column whose values get one line each (default: the first axis that varies)")
    plot.add_argument("--out", type=Path, help="PNG path, an SVG is written beside it (default: figures/CSVSTEM_FIGURE.png)")

    demo = sub.add_parser("demo", help="the seed's own example: lr 0.03, 3 epochs, w=[2, -3.4], b=4.2")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--lr", type=float, default=0.03)
    demo.add_argument("--epochs", type=int, default=3)
    demo.add_argument("--loss", default="squared")
    demo.add_argument("--num-train", type=int, default=1000)
    return parser


#: A table of more rows than this goes to Parquet when no --out is given: as CSV it would take
#: over 350 MB and minutes to write (about 30 s per million rows on the project's machine).
CSV_MAX_ROWS = 1_000_000
#: `study run` prints medians of tables up to this many rows (it reads the table back for them).
SUMMARY_MAX_ROWS = 2_000_000
#: run_grid's parameters, as the flags of `study run` that set them.
_RUN_FLAGS = {"out": "--out", "n_jobs": "--jobs", "device": "--device", "engine": "--engine", "backend": "--backend",
              "chunk_size": "--chunk-size", "scheduler": "--scheduler", "chunk_timeout": "--chunk-timeout"}


def _cmd_run(args: argparse.Namespace) -> int:
    import math

    from ._checks import check_output
    from .grid import load_grid
    from .vocabulary import RUN_AXES

    # Warnings about the spec (duplicate values) are shown once it is accepted: a refused
    # spec gets its one line of error and nothing else, before torch and pandas are imported.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grid = load_grid(args.spec)
        rows = math.prod(len(getattr(grid, a)) for a in RUN_AXES) * grid.replicates * len(grid.checkpoints)
        out = args.out
        if out is None:
            # raw tables go to results/raw/ (git-ignored), clear of the exercises' committed summaries
            out = Path("results") / "raw" / f"{grid.name}.{'parquet' if rows > CSV_MAX_ROWS else 'csv'}"
        out = _flagged(check_output, out, where="option of study run")
    for warning in caught:
        _one_line_warning(warning.message, warning.category, warning.filename, warning.lineno)
    from .runner import ChunksFailed, plan_summary, run_grid, store_path

    if args.dry_run or not args.quiet:
        print(_flagged(plan_summary, grid, n_jobs=args.jobs, device=args.device, engine=args.engine,
                       backend=args.backend, chunk_size=args.chunk_size), flush=True)
        if args.out is None and rows > CSV_MAX_ROWS:
            print(f"writing Parquet: {rows:,} rows are too many for a CSV (--out NAME.csv to have one anyway)")
        if args.dry_run:
            return EXIT_OK
    store = store_path(out)
    try:
        df = _flagged(run_grid, grid, out=out, n_jobs=args.jobs, device=args.device, engine=args.engine,
                      backend=args.backend, resume=not args.fresh, progress=not args.quiet,
                      chunk_size=args.chunk_size, scheduler=args.scheduler, chunk_timeout=args.chunk_timeout,
                      frame=not args.quiet and rows <= SUMMARY_MAX_ROWS)
    except ChunksFailed as err:
        for failure in err.failures[:_MAX_FAILURES_SHOWN]:
            print(f"study: failed: {failure}", file=sys.stderr)
        if len(err.failures) > _MAX_FAILURES_SHOWN:
            print(f"study: failed: ... and {len(err.failures) - _MAX_FAILURES_SHOWN} more chunks "
                  f"(all listed in {out.stem}.partial.meta.json)", file=sys.stderr)
        print(f"study: failed: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as err:
        kept = len(list(store.glob("*.runs"))) if store.is_dir() else 0
        what, status = _stopped(err)
        print(f"study: {what}; {kept} finished chunks are kept in {store}; run the same command again to resume",
              file=sys.stderr)
        return status
    if not args.quiet:
        import json

        meta = json.loads(out.with_name(out.stem + ".meta.json").read_text())
        print(f"wrote {out} ({meta['runs']} runs, {meta['rows']} rows) and {out.with_name(out.stem + '.meta.json').name}; "
              f"{meta['runs_computed']} runs trained, {meta['runs_reused']} taken from {store}")
        if df is None:
            print(f"summarize it with: study table {out}")
            return EXIT_OK
        from .results import default_by, summarize

        by = [a for a in default_by(df) if a != "epoch"]  # the last checkpoint of each run
        print(f"medians at epoch {grid.max_epoch} (all checkpoints: study table {out}):")
        _print_medians(summarize(df[df["epoch"] == grid.max_epoch], by=by or ["num_train"]))
    return EXIT_OK


def _flagged(function, *args, **kwargs):
    """function(*args, **kwargs), with a refusal of one of run_grid's parameters worded as the
    flag of `study run` the user typed (--jobs, not n_jobs)."""
    try:
        return function(*args, **kwargs)
    except ValueError as err:
        text = str(err)
        for name, flag in _RUN_FLAGS.items():
            for where in ("parameter of run_grid", "option of study run"):
                prefix = f"The {name!r} {where} "
                if text.startswith(prefix):
                    raise ValueError(f"The {flag!r} option {text[len(prefix):]}") from None
        raise


def _print_medians(summary) -> None:
    import pandas as pd

    cols = [c for c in summary.columns if not c.endswith(("_mean", "_q10", "_q90"))]
    with pd.option_context("display.max_rows", 60, "display.width", 160, "display.float_format", "{:.3g}".format):
        print(summary[cols].to_string(index=False))


def _cmd_table(args: argparse.Namespace) -> int:
    from ._checks import check_output
    from .results import read_results, summarize, write_table

    df = read_results(args.csv)
    by = [c.strip() for c in args.by.split(",") if c.strip()] if args.by else None
    summary = summarize(df, by=by)
    if args.out:
        write_table(summary, check_output(args.out))
    _print_medians(summary)
    return EXIT_OK


def _cmd_exercises(args: argparse.Namespace) -> int:
    import time

    from .exercises import STUDIES, run_exercises

    numbers = None
    if args.only:
        try:
            numbers = [int(n) for n in args.only.split(",") if n.strip()]
        except ValueError:
            raise ValueError(f"The '--only' option must be comma-separated numbers among {sorted(STUDIES)}. "
                             f"Got {args.only!r} instead.") from None
    out_dir = args.out_dir or Path("exercises-quick" if args.quick else ".")
    started = time.perf_counter()
    run_exercises(numbers, quick=args.quick, out_dir=out_dir, n_jobs=args.jobs, progress=not args.quiet,
                  log=(lambda _: None) if args.quiet else print)
    if not args.quiet:
        print(f"done in {time.perf_counter() - started:.1f} s; answers in {out_dir / 'results' / 'answers.md'}")
    return EXIT_OK


def _cmd_plot(args: argparse.Namespace) -> int:
    from .exercises import draw_figure, figure_names
    from .plots import save_figure
    from .results import read_results

    if args.figure not in figure_names():
        raise ValueError(f"The '--figure' option must be one of {figure_names()}. Got {args.figure!r} instead.")
    out = args.out or Path("figures") / f"{args.csv.stem}_{args.figure}.png"
    if out.suffix.lower() != ".png":
        raise ValueError(f"The '--out' option must be a path ending in .png. Got {str(out)!r} instead.")
    fig = draw_figure(read_results(args.csv), args.figure, y=args.y, hue=args.hue)
    written = save_figure(fig, out)
    print("wrote " + " and ".join(map(str, written)))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .exercises import seed_example

    errors = seed_example(lr=args.lr, loss=args.loss, epochs=args.epochs, num_train=args.num_train, seed=args.seed)
    print(f"error in estimating w: {errors['w']}")
    print(f"error in estimating b: {errors['b']}")
    print(f"least squares on the same data: error in w: {errors['ols_w']}, error in b: {errors['ols_b']:.3g}")
    return EXIT_OK


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"study: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    with warnings.catch_warnings(), _sigterm_as_interrupt():
        warnings.showwarning = _one_line_warning
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = _build_parser().parse_args(argv)
        command = {"run": _cmd_run, "table": _cmd_table, "exercises": _cmd_exercises, "plot": _cmd_plot, "demo": _cmd_demo}[args.command]
        return command(args)
    except SystemExit as done:  # argparse after --help: main returns its status, as for every other path
        return done.code if isinstance(done.code, int) else EXIT_OK
    except _UsageError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, FileNotFoundError) as err:
        print(f"study: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        what, status = _stopped(err)
        print(f"study: {what}; finished chunks are kept, run the same command again to resume", file=sys.stderr)
        return status
    except Exception as err:  # a failure at run time: one line, the kind and the message
        print(f"study: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
