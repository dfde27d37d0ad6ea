"""The ``study`` command: run | table | compare | plot | exercises | demo.

Exit status: 0 on success, 2 for bad input (a one-line message, no traceback, nothing
written), 1 for a failure at run time, 130 when interrupted (Ctrl-C), 143 when terminated
(SIGTERM, what a batch system sends at its time limit: handled as Ctrl-C is, finished work kept).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .errors import Terminated

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
#: A reader that went away (a pipe into head): the status of a process stopped by SIGPIPE, 128 + 13.
EXIT_BROKEN_PIPE = 141


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs (in the main thread), SIGTERM raises Terminated; then as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame) -> NoReturn:
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

    def error(self, message: str) -> NoReturn:
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


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, e.g. 0.05, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, e.g. 0.05, got {text!r}")
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
    from . import __version__
    from .vocabulary import BACKENDS, DEFAULT_CHUNK_TIMEOUT, ENGINES

    parser = _Parser(prog="study", description="Estimation error of minibatch SGD on d2l's concise linear regression.")
    parser.add_argument("--version", action="version", version=f"%(prog)s (estimation-study) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train every run of a TOML grid and write the tidy CSV")
    run.add_argument("spec", type=Path, help="the TOML spec (see experiments/quick.toml)")
    run.add_argument(
        "--out",
        type=Path,
        help="output table, .csv or .parquet (default: results/raw/NAME.csv, or "
        f"NAME.parquet past {CSV_MAX_ROWS:,} rows)",
    )
    run.add_argument("--jobs", type=_positive_int, default=-1, help="workers (-1: all cores, or one per GPU)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    run.add_argument("--engine", choices=ENGINES, default="batched")
    run.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="a joblib backend, or dask: a Dask cluster (--scheduler), else a local one; auto (the default): "
        "threads where the chunks train in compiled loops, else loky's worker processes",
    )
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --backend dask: tcp://HOST:PORT of a running `dask scheduler`, or its scheduler file",
    )
    run.add_argument(
        "--chunk-timeout",
        type=_seconds,
        metavar="SECONDS",
        help=f"with --backend dask: give up a chunk after this long on the cluster (default {DEFAULT_CHUNK_TIMEOUT:g})",
    )
    run.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=None,
        help="at most this many runs per chunk, rounded down to whole streams (at least one)",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="empty the store of finished runs kept beside the output (OUT.store/) and train every run",
    )
    run.add_argument(
        "--force", action="store_true", help="start even where the disk lacks the room the output is estimated to take"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs, rows, chunks, devices, an estimate of the time and the CSV's size; run nothing",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    run.add_argument(
        "--target-precision",
        type=_fraction,
        metavar="F",
        help="grow the replicates, reusing the runs already trained, until the 95%% interval of the median "
        "of --metric is within ±F (e.g. 0.05) of it in every cell, or --max-replicates is reached; "
        "with --dry-run, predict the replicates from the runs the output already holds",
    )
    run.add_argument(
        "--metric",
        default="w_err_norm",
        metavar="M",
        help="with --target-precision: the error whose median is made precise (w_err_norm, b_err, w_err_J)",
    )
    run.add_argument(
        "--max-replicates",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="with --target-precision: the most replicates a cell may grow to (default 1000)",
    )

    table = sub.add_parser(
        "table",
        help="per-cell summary of a results table (or its diverged runs)",
        description="Per cell: runs, diverged runs, data streams, and the median of each error "
        "(--out: mean, median, 10% and 90% too). It says which epoch it shows and which axes a "
        "cell pools over. SGD's errors leave diverged runs out; least squares uses every run, "
        "once per data stream. " + _FOLDER_RULE,
    )
    table.add_argument("table", type=Path, metavar="TABLE", help="a results table (.csv or .parquet)")
    table.add_argument(
        "--by",
        metavar="COLS",
        help="comma-separated columns that define a cell (default: the axes that vary, and epoch)",
    )
    table.add_argument(
        "--epoch",
        type=int,
        metavar="E",
        help="the checkpoint shown (default: every checkpoint when epoch is among --by, else each run's last)",
    )
    table.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help="keep the rows whose axis KEY has VALUE (or one of VALUE,VALUE...); repeatable",
    )
    table.add_argument(
        "--diverged",
        action="store_true",
        help="list the runs that diverged (by --epoch, default by the last), with their cells",
    )
    table.add_argument(
        "--precision",
        action="store_true",
        help="with each number its Monte Carlo precision: medians with their 95%% interval, and "
        "(with --out) bias, empirical SE, RMSE and relative efficiency against least squares, "
        "each with its MCSE, over data streams",
    )
    table.add_argument(
        "--out", type=Path, metavar="PATH", help="write the whole table (every statistic) to this .csv or .parquet"
    )

    compare = sub.add_parser(
        "compare",
        help="each level of a factor against a baseline, paired by data stream",
        description="Per cell: the median of the paired ratios error / baseline's error over "
        "the data streams (runs that differ only in lr, loss, sigma or reduction share their data), "
        "with a 95%% interval from order statistics; the ratio of RMSEs with a bootstrap interval "
        "over streams; and the share of streams on which the level wins. A diverged run loses. A "
        "factor that changes the data (num_train, noise, noise_kind, batch_size) is compared "
        "unpaired, and says so. " + _FOLDER_RULE,
    )
    compare.add_argument("table", type=Path, metavar="TABLE", help="a results table (.csv or .parquet)")
    compare.add_argument(
        "--factor", required=True, metavar="AXIS", help="the axis whose levels are compared, e.g. loss"
    )
    compare.add_argument("--baseline", required=True, metavar="VALUE", help="the level compared against, e.g. squared")
    compare.add_argument(
        "--metric",
        default="w_err_norm",
        metavar="M",
        help="the error compared: w_err_norm (default), w_err_J, b_err, gap_w_norm or val_mse",
    )
    compare.add_argument("--by", metavar="COLS", help="comma-separated cells (default: every other axis that varies)")
    compare.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help="keep the rows whose axis KEY has VALUE (or one of VALUE,VALUE...); repeatable",
    )
    compare.add_argument("--epoch", type=int, metavar="E", help="the checkpoint compared (default: each run's last)")
    compare.add_argument("--out", type=Path, metavar="PATH", help="write the comparison to this .csv or .parquet")

    exercises = sub.add_parser(
        "exercises",
        help="answer the section's five exercises, and two studies beyond: tables, figures, answers",
        description="Runs each exercise's grid (study/exercises/specs/exN_*.toml, package data) and writes under "
        "--out-dir: results/ (summary CSVs and answers.md), results/raw/ (the raw tables) "
        "and figures/ (PNG, or --formats). " + _FOLDER_RULE,
    )
    exercises.add_argument("--quick", action="store_true", help="smaller grids, in seconds (into exercises-quick/)")
    exercises.add_argument(
        "--only",
        metavar="N,N",
        help="comma-separated study numbers: 1-5 the book's exercises, 6 and 7 beyond them (default: all)",
    )
    exercises.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="where results/ and figures/ go (default: '.', or exercises-quick/ with --quick)",
    )
    exercises.add_argument(
        "--jobs",
        type=_positive_int,
        default=-1,
        help="processes the studies run in, side by side (-1: one per core, up to one per study)",
    )
    exercises.add_argument(
        "--formats",
        default="png",
        metavar="EXT,EXT",
        help="the figures' formats, comma-separated among png, svg, pdf (default: png)",
    )
    exercises.add_argument("--quiet", action="store_true", help="no progress bars, no report")

    plot = sub.add_parser(
        "plot",
        help="draw a figure from a results table (PNG, SVG or PDF)",
        description="A median line over the runs of each point with a band (--band: by default "
        "the 95%% interval of the median), on log axes, one line per --hue (and --style) value, one panel per --col and --row value. An axis of "
        "the table that varies but is neither on the figure nor fixed by --where is refused, "
        "never pooled; --epoch picks the checkpoint (default: the last) unless epoch is on the "
        "figure. The named figures put axes that vary on hue, then col, then row, and say so in "
        "their title. Dashed lines are theory (study.theory), drawn where it holds: least squares "
        "for Gaussian noise, the noise floor of SGD on the squared loss. " + _FOLDER_RULE,
    )
    plot.add_argument("table", type=Path, metavar="TABLE", help="a results table (.csv or .parquet)")
    what = plot.add_mutually_exclusive_group()
    what.add_argument(
        "--figure",
        metavar="NAME",
        help="error-vs-num_train | error-vs-epoch | error-vs-lr | heatmap | "
        "nested-loop (every cell on one axis, the factors' levels as steps beneath), or an exercise's "
        "figure (ex1_reduction, ..., ex5_data_size) drawn from its raw table",
    )
    what.add_argument("--x", metavar="X", help="the column on the x axis (instead of --figure)")
    plot.add_argument("--y", metavar="Y", help="the error column drawn (default: w_err_norm)")
    for role, says in (
        ("hue", "one colour"),
        ("style", "one marker"),
        ("col", "one column of panels"),
        ("row", "one row of panels"),
    ):
        plot.add_argument(f"--{role}", metavar="COL", help=f"the column whose values get {says} each")
    plot.add_argument(
        "--order",
        metavar="A,B,...",
        help="with --figure nested-loop: its factors, outermost first, "
        "comma-separated; every axis that varies must be one (epoch too: every checkpoint a level) "
        "(default: every axis that varies, the data's first: num_train, batch_size, noise, noise_kind, "
        "then lr, loss, sigma, reduction)",
    )
    plot.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help="keep the rows whose axis KEY has VALUE (or one of VALUE,VALUE...); repeatable",
    )
    plot.add_argument("--epoch", type=int, metavar="E", help="the checkpoint shown (default: the last)")
    plot.add_argument(
        "--title",
        metavar="TEXT",
        help="the figure's title, in place of the one it makes (the line saying what it holds fixed stays)",
    )
    plot.add_argument(
        "--band",
        choices=("ci", "spread", "both"),
        help="the band around each line: ci, the 95%% interval of its median (default); spread, 10-90%% "
        "of the runs; both (the spread light, the interval dark)",
    )
    plot.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="the figure, PNG, SVG or PDF by its extension; only that file is written "
        "(default: figures/TABLESTEM_NAME.png)",
    )

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
#: run_grid's (and plan_summary's) parameters, as the flags of `study run` that set them.
_RUN_FLAGS = {
    "out": "--out",
    "n_jobs": "--jobs",
    "device": "--device",
    "engine": "--engine",
    "backend": "--backend",
    "chunk_size": "--chunk-size",
    "scheduler": "--scheduler",
    "chunk_timeout": "--chunk-timeout",
    "force": "--force",
}


def _cmd_run(args: argparse.Namespace) -> int:
    from .grid import load_grid

    # Warnings about the spec (duplicate values) are shown once it is accepted: a refused
    # spec gets its one line of error and nothing else, before torch and pandas are imported.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grid = load_grid(args.spec)
        rows = grid.n_rows
        out = args.out
        if out is None:
            # raw tables go to results/raw/ (git-ignored), clear of the exercises' committed summaries
            out = Path("results") / "raw" / f"{grid.name}.{'parquet' if rows > CSV_MAX_ROWS else 'csv'}"
        out, folders = _output_path(out, "--out", (".csv", ".parquet"), default=args.out is None)
    for warning in caught:
        _one_line_warning(warning.message, warning.category, warning.filename, warning.lineno)
    from .errors import ChunksFailed
    from .runner import plan_summary, run_grid, store_path

    if args.dry_run or not args.quiet:
        with _in_flags(_RUN_FLAGS):
            line = plan_summary(
                grid,
                n_jobs=args.jobs,
                device=args.device,
                engine=args.engine,
                backend=args.backend,
                chunk_size=args.chunk_size,
                out=out,
            )
        print(line, flush=True)
        if args.out is None and rows > CSV_MAX_ROWS:
            print(f"writing Parquet: {rows:,} rows are too many for a CSV (--out NAME.csv to have one anyway)")
        if args.dry_run:
            if args.target_precision is not None:
                _predict_replicates(grid, out, args)
            return EXIT_OK
    store = store_path(out)
    try:
        try:
            with _in_flags(_RUN_FLAGS):

                def train(g) -> None:
                    run_grid(
                        g,
                        out=out,
                        n_jobs=args.jobs,
                        device=args.device,
                        engine=args.engine,
                        backend=args.backend,
                        resume=not args.fresh or g is not grid,
                        progress=not args.quiet,
                        chunk_size=args.chunk_size,
                        scheduler=args.scheduler,
                        chunk_timeout=args.chunk_timeout,
                        frame=False,
                        force=args.force,
                    )

                train(grid)
                if args.target_precision is not None:
                    grid = _grow_to_target(grid, out, args, train)
        finally:
            # run_grid makes the output's folders (those _output_path allowed) once its arguments
            # pass: named here, however the run ended.
            _created(folders)
    except ChunksFailed as err:
        for failure in err.failures[:_MAX_FAILURES_SHOWN]:
            print(f"study: failed: {failure}", file=sys.stderr)
        if len(err.failures) > _MAX_FAILURES_SHOWN:
            print(
                f"study: failed: ... and {len(err.failures) - _MAX_FAILURES_SHOWN} more chunks "
                f"(all listed in {out.stem}.partial.meta.json)",
                file=sys.stderr,
            )
        print(f"study: failed: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as err:
        kept = len(list(store.glob("*.runs"))) if store.is_dir() else 0
        what, status = _stopped(err)
        print(
            f"study: {what}; {kept} finished chunks are kept in {store}; run the same command again to resume",
            file=sys.stderr,
        )
        return status
    if not args.quiet:
        import json

        meta = json.loads(out.with_name(out.stem + ".meta.json").read_text())
        print(
            f"wrote {out} ({meta['runs']} runs, {meta['rows']} rows) and {out.with_name(out.stem + '.meta.json').name}; "
            f"{meta['runs_computed']} runs trained, {meta['runs_reused']} taken from {store}"
        )
        from .selection import default_by
        from .summaries import summarize

        # From the file just written, by the analysis engine: a table of any size, never loaded whole.
        by = [a for a in default_by(out) if a != "epoch"]  # the last checkpoint of each run
        print(f"medians at epoch {grid.max_epoch} (all checkpoints: study table {out}):")
        _print_medians(summarize(out, by=by or ["num_train"], epoch=grid.max_epoch))
    return EXIT_OK


def _grow_to_target(grid, out: Path, args: argparse.Namespace, train):
    """Grow the grid's replicates, round by round, until every cell's median of --metric is
    within ±--target-precision (its 95% interval's half-width over the median), or the cap. Each
    round trains only the replicates added (the others are in the store). Returns the last grid."""
    from .grid import Grid
    from .summaries import precision_shortfall

    target, cap = args.target_precision, args.max_replicates
    for round_ in range(1, 100):
        cells = precision_shortfall(out, metric=args.metric, target=target, replicates=grid.replicates)
        short = cells[cells["relative"] > target]
        if short.empty:
            print(
                f"target reached: the median of {args.metric} is within ±{target:.3g} of itself (95% interval) in "
                f"every cell{_diverging_text(cells)}, with {grid.replicates} replicates (worst "
                f"±{cells['relative'].max():.3g})"
            )
            return grid
        from .words import format_value

        worst = short.loc[[short["relative"].idxmax()]].to_dict("records")[0]
        cell = ", ".join(f"{a} = {format_value(worst[a])}" for a in cells.columns[: cells.columns.get_loc("units")])
        if grid.replicates >= cap:
            print(
                f"--max-replicates {cap} reached: {len(short)} of {len(cells)} cells are still short of ±{target:.3g} "
                f"(worst ±{worst['relative']:.3g}, at {cell})"
            )
            return grid
        grown = int(min(cap, max(grid.replicates + 1, short["replicates_needed"].max())))
        added = grid.n_runs // grid.replicates * (grown - grid.replicates)
        print(
            f"round {round_}: {len(short)} of {len(cells)} cells short of ±{target:.3g}{_diverging_text(cells)} "
            f"(worst ±{worst['relative']:.3g}, at {cell}); growing from {grid.replicates} to {grown} replicates: {added:,} runs to train",
            flush=True,
        )
        grid = Grid(**{**grid.to_dict(), "replicates": grown})
        train(grid)
    return grid


def _diverging_text(cells) -> str:
    """The cells a target precision leaves out: those where most runs diverged, whose median
    error more replicates cannot make finite."""
    k = int(cells["diverging"].sum())
    return f" but the {k} where most runs diverged" if k else ""


def _predict_replicates(grid, out: Path, args: argparse.Namespace) -> None:
    """--dry-run --target-precision: the replicates the runs the output holds predict."""
    from .summaries import precision_shortfall

    try:
        cells = precision_shortfall(out, metric=args.metric, target=args.target_precision)
    except FileNotFoundError:
        print(f"no runs in {out} yet to predict the replicates from: run it, or run fewer replicates first")
        return
    needed = int(cells["replicates_needed"].max())
    print(
        f"from the runs in {out}: about {min(needed, args.max_replicates)} replicates for ±{args.target_precision:.3g} "
        f"in every cell{_diverging_text(cells)} (now worst ±{cells['relative'].max():.3g})"
        + (f"; --max-replicates {args.max_replicates} would stop first" if needed > args.max_replicates else "")
    )


def _created(folders: Sequence[Path]) -> None:
    """Name the folders a run made for its output, as _make_folders does for the other commands."""
    for folder in folders:
        if folder.is_dir():
            print(f"study: created folder {folder}", file=sys.stderr)


#: The one rule for output folders, in every command (and in its --help).
_FOLDER_RULE = (
    "Outputs: a path you give must lie in a folder that exists, or in one new folder inside an existing "
    "one, which is created; a default output's folders (results/, results/raw/, figures/) are created "
    "as needed. Each folder created is named on stderr; anything else is refused before any work."
)


def _output_path(path: Path, flag: str, suffixes: Sequence[str], *, default: bool = False) -> tuple[Path, list[Path]]:
    """Check an output path before any work, by the folder rule (_FOLDER_RULE); return it and
    the folders to create for it, outermost first (create them with _make_folders when writing).

    ``suffixes``: the extensions allowed, or () for a folder (--out-dir). ``default``: the
    command chose the path, so its missing folders are the command's layout.
    """
    import os
    import tempfile

    def refuse(allowed: str) -> NoReturn:
        if default:  # the user typed no flag: the path is the command's own choice, and said so
            raise ValueError(
                f"The default output {str(path)!r} (no {flag} given) must be {allowed}; give {flag} elsewhere."
            )
        raise ValueError(f"The {flag!r} option must be {allowed}. Got {str(path)!r} instead.")

    if suffixes and path.suffix.lower() not in suffixes:
        refuse(
            f"a path ending in {', '.join(suffixes[:-1])} or {suffixes[-1]}"
            if len(suffixes) > 1
            else f"a path ending in {suffixes[0]}"
        )
    try:
        folder = path if not suffixes else path.parent
        if suffixes and path.is_dir():
            refuse("a file path, not a folder")
        if not suffixes and path.exists() and not path.is_dir():
            refuse("a folder, not a file")
        missing = []
        existing = folder
        while not existing.exists():
            missing.append(existing)
            if existing.parent == existing:
                break
            existing = existing.parent
        if len(missing) > 1 and not default:
            refuse(
                f"a path in an existing folder, or in one new folder inside an existing one (neither "
                f"{str(missing[0])!r} nor {str(missing[-1])!r} exists)"
            )
        if not existing.is_dir():
            refuse(f"a path in a folder ({str(existing)!r} is a file)")
        if not os.access(existing, os.W_OK | os.X_OK):
            refuse(f"a path in a folder that can be written ({str(existing)!r} cannot be)")
        if suffixes and path.exists() and not os.access(path, os.W_OK):
            refuse("a file that can be written")
        # what permission bits do not say (a read-only file system): a probe file, removed at once
        fd, probe = tempfile.mkstemp(prefix=".study-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        refuse(f"a path that can be written ({err.strerror or err})")
    return path, list(reversed(missing))


def _make_folders(folders: Sequence[Path]) -> None:
    for folder in folders:
        if not folder.is_dir():
            folder.mkdir()
            print(f"study: created folder {folder}", file=sys.stderr)


#: How table, plot and exercises name their functions' parameters: by the flags the user typed.
_TABLE_FLAGS = {"by": "--by", "epoch": "--epoch", "where": "--where", "out": "--out"}
_COMPARE_FLAGS = {**_TABLE_FLAGS, "factor": "--factor", "baseline": "--baseline", "metric": "--metric"}
_PLOT_FLAGS = {
    "figure": "--figure",
    "x": "--x",
    "y": "--y",
    "value": "--y",
    "hue": "--hue",
    "style": "--style",
    "band": "--band",
    "title": "--title",
    "order": "--order",
    "col": "--col",
    "row": "--row",
    "where": "--where",
    "epoch": "--epoch",
    "out": "--out",
}
_EXERCISES_FLAGS = {"numbers": "--only", "out_dir": "--out-dir"}


@contextlib.contextmanager
def _in_flags(flags: dict[str, str], *, roles: bool = True, place: str | None = None):
    """Refusals of the library, reworded with the flags of the command: a ParameterError names
    the flag in place of the parameter, a PoolingError the flags that place or fix an axis
    (``place``: how to place one, where the figure takes no roles but another flag)."""
    from .errors import ParameterError, PoolingError  # light: no torch, no pandas

    try:
        yield
    except ParameterError as err:
        if err.name not in flags:
            raise
        raise ValueError(err.as_option(flags[err.name])) from None
    except PoolingError as err:
        from .words import describe_axes, format_value

        fix = " ".join(f"--where {axis}={format_value(values[0])}" for axis, values in err.axes.items())
        if place is None:
            place = "put them on the figure (--hue/--style/--col/--row) or " if roles else ""
        raise ValueError(f"the table varies in {describe_axes(err.axes)}; {place}fix them ({fix})") from None


def _columns_line(frame, width: int, keep: int):
    """The columns of frame that fit ``width`` characters (at least the first ``keep``), and
    those left out."""
    dropped: list[str]
    columns, dropped = list(frame.columns), []
    sample = frame if len(frame) <= 400 else frame.iloc[list(range(200)) + list(range(len(frame) - 200, len(frame)))]
    while len(columns) > keep and _rendered_width(sample[columns]) > width:
        dropped.insert(0, columns.pop())
    return columns, dropped


def _rendered_width(frame) -> int:
    return max(len(line) for line in _render(frame).splitlines()) if len(frame.columns) else 0


def _render(frame) -> str:
    import pandas as pd

    with pd.option_context(
        "display.max_rows",
        None,
        "display.max_columns",
        None,
        "display.width",
        10_000,
        "display.max_colwidth",
        60,
        "display.float_format",
        "{:.3g}".format,
    ):
        return frame.to_string(index=False)


def _say(text: str) -> None:
    """Print a line of text, wrapped to the terminal's width."""
    import shutil
    import textwrap

    print(textwrap.fill(text, shutil.get_terminal_size((100, 24)).columns))


def _print_fitting(frame, keep: int) -> None:
    """Print a table as wide as the terminal (shutil.get_terminal_size): columns from the right
    are left out, and named, until it fits; the first ``keep`` always stay."""
    import shutil
    import textwrap

    width = shutil.get_terminal_size((100, 24)).columns
    columns, dropped = _columns_line(frame, width, keep)
    print(_render(frame[columns]))
    if dropped:
        print(
            textwrap.fill(
                f"({len(dropped)} columns left out to fit {width} characters: {', '.join(dropped)}; "
                "--out FILE writes every column)",
                width,
            )
        )


#: The medians `study table` prints, in the order they are left out last to first.
_PRINTED = (
    "count",
    "diverged",
    "streams",
    "w_err_norm_median",
    "ols_w_err_norm_median",
    "b_err_abs_median",
    "gap_w_norm_median",
    "ols_b_err_abs_median",
    "val_mse_median",
)


#: With --precision: what is printed besides the medians (each with its interval), each as
#: "value ± MCSE".
_PRINTED_PRECISION = ("units", "w_err_norm_rmse", "w_err_norm_releff", "b_err_releff")


def _print_medians(summary) -> None:
    """A summary's cells, counts and medians (the other statistics go to --out), fitted to the
    terminal; its pooled_over column is said once, above it, by the callers. A summary with
    its precision (summarize's ``ci``) shows each median with its interval, "0.00035 [0.00031,
    0.0004]", and the root mean squared error and relative efficiencies as "0.0011 ± 4e-05"."""
    precision = summary.attrs.get("ci") is not None
    printed = (*_PRINTED[:3], *(_PRINTED_PRECISION if precision else ()), *_PRINTED[3:])
    added = _precision_columns(summary)
    cells = [
        c
        for c in summary.columns
        if c not in printed
        and c not in added
        and not c.endswith(("_mean", "_median", "_q10", "_q90"))
        and c != "pooled_over"
    ]
    columns = [*cells, *[c for c in printed if c in summary.columns]]
    shown = summary[columns].copy()
    if precision:
        for c in columns:
            if f"{c}_lo" in summary:
                shown[c] = [
                    f"{m:.2g} [{lo:.2g}, {hi:.2g}]"
                    for m, lo, hi in zip(summary[c], summary[f"{c}_lo"], summary[f"{c}_hi"])
                ]
            elif f"{c}_mcse" in summary:
                shown[c] = [f"{v:.2g} ± {e:.1g}" for v, e in zip(summary[c], summary[f"{c}_mcse"])]
    _print_fitting(shown, keep=min(len(columns), len(cells) + 4))


def _precision_columns(summary) -> set:
    """The columns summarize's ``ci`` added (the precision of each number), never a cell."""
    from .summaries import ERROR_METRICS

    base = {f"{m}_{s}" for m in ERROR_METRICS for s in ("mean", "median", "q10", "q90")}
    return {c for c in summary.columns if c.startswith(("w_err_", "b_err_")) and c not in base}


def _where_text(where: dict) -> str:
    from .words import values_text

    return ", ".join(f"{k} = {values_text(v)}" for k, v in where.items())


def _cmd_table(args: argparse.Namespace) -> int:
    with _in_flags(_TABLE_FLAGS):
        from .errors import ParameterError
        from .schema import write_table
        from .summaries import diverged_runs, summarize
        from .words import describe_axes

        out, folders = _output_path(args.out, "--out", (".csv", ".parquet")) if args.out else (None, [])
        by = None
        if args.by is not None:
            by = [c.strip() for c in args.by.split(",") if c.strip()]
            if not by or args.diverged:
                raise ParameterError(
                    "by",
                    "option",
                    "column names separated by commas, and left out with --diverged"
                    if args.diverged
                    else "column names separated by commas",
                    args.by,
                )
        rows, where = _chosen_rows(args.table, args.where)
        fixed = f"; where {_where_text(where)}" if where else ""
        if rows.note:
            _say(rows.note)
        if args.diverged:
            table = diverged_runs(rows, epoch=args.epoch)
            by_when = f"by epoch {args.epoch}" if args.epoch is not None else "by each run's last checkpoint"
            _say(f"{len(table)} of {rows.runs()} runs diverged {by_when}{fixed}")
        else:
            table = summarize(rows, by=by, epoch=args.epoch, ci=0.95 if args.precision else None)
            pooled = table.attrs["pooled"]
            _say(
                f"{table.attrs['epoch']}; cells by {', '.join(table.attrs['by'])}{fixed}; "
                + (f"pooled over {describe_axes(pooled)}" if pooled else "nothing pooled")
            )
            _say(
                "count: runs; SGD's medians leave out the diverged runs; least squares (ols_*) uses every run, "
                "once per data stream (streams)"
            )
    if out is not None:
        _make_folders(folders)
        write_table(table, out)
    if args.diverged:
        if len(table):
            _print_fitting(table, keep=min(len(table.columns), 3))
    else:
        _print_medians(table)
    if out is not None:
        print(f"wrote {out}")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    with _in_flags(_COMPARE_FLAGS, roles=False):
        from .comparisons import compare
        from .errors import ParameterError
        from .schema import write_table
        from .words import format_value

        out, folders = _output_path(args.out, "--out", (".csv", ".parquet")) if args.out else (None, [])
        by = None
        if args.by is not None:
            by = [c.strip() for c in args.by.split(",") if c.strip()]
            if not by:
                raise ParameterError("by", "option", "column names separated by commas", args.by)
        rows, where = _chosen_rows(args.table, args.where)
        table = compare(rows, factor=args.factor, baseline=args.baseline, metric=args.metric, by=by, epoch=args.epoch)
    if rows.note:
        _say(rows.note)
    fixed = f"; where {_where_text(where)}" if where else ""
    a = table.attrs
    how = (
        "paired by data stream"
        if a["paired"]
        else f"unpaired: {a['factor']} changes the data, so no two of its levels share a stream"
    )
    _say(
        f"{a['epoch']}; {a['metric']} of each {a['factor']} against {a['factor']} = {format_value(a['baseline'])}, "
        f"{how}{fixed}"
    )
    _say(
        "ratio: median of the paired ratios (unpaired: ratio of the medians), with its 95% interval; rmse_ratio: "
        "ratio of RMSEs, bootstrap 95% interval; wins: share of streams where the level's error is smaller; a "
        "diverged run loses"
        if a["paired"]
        else "ratio: ratio of the medians, 95% interval from the two medians' "
        "intervals; rmse_ratio: ratio of RMSEs, bootstrap 95% interval; diverged runs count as infinite errors"
    )
    shown = table.drop(columns=["baseline", "paired"] + ([] if a["paired"] else ["wins"]))
    for name in ("ratio", "rmse_ratio"):
        shown[name] = [
            f"{v:.3g} [{lo:.3g}, {hi:.3g}]" for v, lo, hi in zip(table[name], table[f"{name}_lo"], table[f"{name}_hi"])
        ]
        shown = shown.drop(columns=[f"{name}_lo", f"{name}_hi"])
    if a["paired"]:
        shown["wins"] = [f"{w:.0%}" for w in table["wins"]]
    if out is not None:
        _make_folders(folders)
        write_table(table, out)
    _print_fitting(shown, keep=min(len(shown.columns), len(shown.columns) - 2))
    if out is not None:
        print(f"wrote {out}")
    return EXIT_OK


def _chosen_rows(path: Path, items: Sequence[str] | None):
    """The table at ``path`` (study.analysis.Table: nothing is read whole) and the rows --where
    keeps, with the values chosen; an empty choice is refused, naming the value that has no rows."""
    from .analysis import open_table
    from .selection import parse_where
    from .words import format_value

    table = open_table(path)
    where = parse_where(table, items or [], where="option")
    rows = table.select(where)
    if where and rows.count() == 0:
        chosen: dict[str, list] = {}
        for key, values in where.items():  # the first value that leaves no rows with those before it
            for value in values:
                if table.select({**chosen, key: [value]}).count() == 0:
                    before = f" with {_where_text(chosen)}" if chosen else ""
                    raise ValueError(f"--where {key}={format_value(value)} selects no rows of {path}{before}")
            chosen[key] = values
        raise ValueError(f"--where {' '.join(items or [])} selects no rows of {path}")
    return rows, where


def _cmd_exercises(args: argparse.Namespace) -> int:
    import time

    from .exercises.pool import stop_workers

    _start_study_workers(args)
    try:
        return _exercises(args, time.perf_counter())
    finally:
        stop_workers()  # done, refused or interrupted: the workers leave now, not at exit


def _exercises(args: argparse.Namespace, started: float) -> int:
    import time

    with _in_flags(_EXERCISES_FLAGS):
        from .exercises.catalog import LAYOUT, check_numbers
        from .exercises.pool import run_studies
        from .vocabulary import FIGURE_FORMATS

        numbers = _only_numbers(args.only)
        if numbers is not None:
            check_numbers(numbers)
        formats = tuple(f".{f.strip().lower().lstrip('.')}" for f in args.formats.split(",") if f.strip())
        if not formats or any(f not in FIGURE_FORMATS for f in formats):
            raise ValueError(
                f"The '--formats' option must be some of png, svg, pdf, separated by commas. "
                f"Got {args.formats!r} instead."
            )
        out_dir = args.out_dir or Path("exercises-quick" if args.quick else ".")
        out_dir, folders = _output_path(out_dir, "--out-dir", (), default=args.out_dir is None)
    _make_folders([*folders, out_dir, *(out_dir / f for f in LAYOUT)])
    # The studies run in worker processes where there are cores for them, so this one imports
    # neither torch nor matplotlib.
    run_studies(
        numbers,
        quick=args.quick,
        out_dir=out_dir,
        n_jobs=args.jobs,
        progress=not args.quiet,
        log=(lambda _: None) if args.quiet else print,
        formats=formats,
        keep=False,
    )
    if not args.quiet:
        print(f"done in {time.perf_counter() - started:.1f} s; answers in {out_dir / 'results' / 'answers.md'}")
    return EXIT_OK


def _only_numbers(only: str | None) -> list[int] | None:
    """The exercise numbers of --only (None: all of them); refused unless numbers and commas."""
    if not only:
        return None
    try:
        numbers = [int(n) for n in only.split(",") if n.strip()]
    except ValueError:
        numbers = []
    if not numbers:
        raise ValueError(
            f"The '--only' option must be exercise numbers separated by commas (e.g. 1,5). Got {only!r} instead."
        )
    return numbers


def _start_study_workers(args: argparse.Namespace) -> None:
    """Start the processes that will run the studies side by side, before anything heavy is
    imported: their imports of torch and matplotlib (about 3 s) begin at once (none where the
    studies run in this process). A bad flag is refused later all the same; the workers are
    then stopped."""
    from .exercises.catalog import check_numbers
    from .exercises.pool import study_executor, study_workers, warm_up

    try:
        numbers = _only_numbers(args.only)
        if numbers is not None:
            check_numbers(numbers)
    except ValueError:  # refused in a moment, with no workers started (stopping them while they
        return  # start made loky's manager thread raise)
    workers = study_workers(numbers, args.jobs)
    if workers > 1:
        executor = study_executor(workers)
        for _ in range(workers):
            executor.submit(warm_up)


#: The measured columns of the results schema (study.schema.metric_columns): what a role may
#: name besides the axes, whatever the table.
_SCHEMA_COLUMN = re.compile(
    r"w_(hat|err)_\d+|w_err_norm|w_err_max|b_hat|b_err|train_loss|val_mse|grad_w_norm|grad_b|"
    r"ols_w_err_norm|ols_b_err|gap_w_norm|steps"
)


def _cmd_plot(args: argparse.Namespace) -> int:
    from .exercises.catalog import EXERCISE_FIGURES  # light: the names, not the studies

    exercise = args.figure in EXERCISE_FIGURES
    nested = args.figure == "nested-loop"
    if args.order is not None and not nested and (args.figure or args.x):  # neither: refused below
        shown = "--x" if args.figure is None else f"the figure {args.figure}"
        raise ValueError(
            f"The '--order' option must be left out with {shown} (only --figure nested-loop takes it). "
            f"Got {args.order!r} instead."
        )
    # A role that no table could hold is refused before anything heavy is imported (the same
    # words as the check against the table's own columns, below).
    from .vocabulary import AXES

    for flag, value in (
        ("--x", args.x),
        ("--hue", args.hue),
        ("--style", args.style),
        ("--col", args.col),
        ("--row", args.row),
    ):
        if value is not None and value not in AXES and not _SCHEMA_COLUMN.fullmatch(value):
            raise ValueError(
                f"The {flag!r} option must be one column of the table (its axes: {', '.join(AXES)}). "
                f"Got {value!r} instead."
            )
    placing = "add them to --order or " if nested else None  # the nested-loop plot's factors are its roles
    with _in_flags(_PLOT_FLAGS, roles=not exercise, place=placing):
        from .errors import ParameterError
        from .plots import GENERIC_FIGURES, check_roles, draw_figure, draw_xy, save_figure
        from .vocabulary import FIGURE_FORMATS

        names = [*GENERIC_FIGURES, *EXERCISE_FIGURES]

        if args.figure is None and args.x is None:
            raise ValueError(
                "The '--figure' or '--x' option must be given: a named figure, or the x axis of "
                "your own (with --y, default w_err_norm). Got neither."
            )
        if args.figure is not None and args.figure not in names:
            raise ParameterError("figure", "option", f"one of {names}", args.figure)
        y = args.y or "w_err_norm"
        rows, where = _chosen_rows(args.table, args.where)
        roles = {"hue": args.hue, "style": args.style, "col": args.col, "row": args.row}
        # Every figure's roles, named ones' too: a role that is not one column is refused here.
        check_roles(rows, where="option", x=args.x, y=None if exercise else y, **roles)
        name = args.figure or f"{y}-vs-{args.x}"
        out = args.out or Path("figures") / f"{args.table.stem}_{name}.png"
        out, folders = _output_path(out, "--out", FIGURE_FORMATS, default=args.out is None)
        if exercise:
            for role, given in {**roles, "epoch": args.epoch, "band": args.band, "title": args.title}.items():
                if given is not None:
                    raise ParameterError(
                        role,
                        "option",
                        f"left out with the exercise figure {args.figure} (drawn as the exercise draws it)",
                        given,
                    )
            from .exercises import exercise_figure  # the studies, with torch: only for their figures

            fig = exercise_figure(rows, args.figure)
        elif args.figure is not None:
            fig = draw_figure(
                rows,
                args.figure,
                y=y,
                **roles,
                epoch=args.epoch,
                fixed=where,
                band=args.band,
                title=args.title,
                order=args.order,
            )
        else:
            fig = draw_xy(
                rows, x=args.x, y=y, **roles, epoch=args.epoch, fixed=where, band=args.band or "ci", title=args.title
            )
    _make_folders(folders)
    written = save_figure(fig, out)
    if rows.note:
        _say(rows.note)
    print("wrote " + " and ".join(map(str, written)))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .exercises.demo import seed_example

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
        command = {
            "run": _cmd_run,
            "table": _cmd_table,
            "compare": _cmd_compare,
            "exercises": _cmd_exercises,
            "plot": _cmd_plot,
            "demo": _cmd_demo,
        }[args.command]
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
    except BrokenPipeError:
        # The reader of the output went away (`study table x.csv | head`): no more to say, and
        # nowhere to say it. stdout is pointed at /dev/null so that its flush at exit is silent;
        # the status is a shell's for a process stopped by SIGPIPE.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as err:  # a failure at run time: one line, the kind and the message
        print(f"study: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
