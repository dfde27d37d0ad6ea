"""Running the exercise studies: their grids, and each study in a process of its own where there
are cores to spare.

Importable without torch, pandas or matplotlib, which take about 3 s to import: ``study
exercises`` starts its worker processes before anything heavy is imported, so that their imports
overlap, and the studies themselves (:mod:`study.exercises`: the analyses, tables and figures)
are imported only by the processes that run them. The studies are independent, and most of a
study's time is its figures, which one process draws alone: on two cores the five run in about
half the time. Their specs are the package's data (study/specs/), found wherever it is installed.
"""

from __future__ import annotations

import concurrent.futures
import importlib.resources
import re
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._checks import ParameterError
from .grid import Grid, load_grid, log_sizes
from .vocabulary import FIGURE_FORMATS

__all__ = [
    "SPECS",
    "LAYOUT",
    "check_numbers",
    "study_grid",
    "study_workers",
    "study_executor",
    "stop_workers",
    "warm_up",
    "run_studies",
]

#: The studies' specs: package data (study/specs/NAME.toml), read through importlib.resources, so
#: that an installed wheel finds them as a checkout does.
SPECS_FOLDER = "specs"
#: Each exercise's study: the name of its spec (study/specs/NAME.toml) and what --quick changes in it.
SPECS: dict[int, tuple[str, dict[str, Any]]] = {
    1: ("ex1_reduction", {"replicates": 3}),
    2: ("ex2_huber", {"replicates": 3, "num_train": [50, 200, 1000], "epoch": [1, 3, 10, 20]}),
    3: ("ex3_gradients", {"replicates": 3, "epoch": list(range(1, 11))}),
    4: ("ex4_lr_epochs", {"replicates": 3, "epoch": [1, 3, 10, 30]}),
    5: ("ex5_data_size", {"replicates": 6, "num_train": log_sizes(5, 2000), "epoch": [1, 10]}),
    6: ("ex6_reaching_the_limit", {"replicates": 6, "epoch": [1, 2, 20]}),
    7: ("ex7_weight_decay", {"replicates": 6, "num_train": [20, 1000]}),
}
#: The studies that answer the book's exercises (§3.5's five); those after them go beyond.
BOOK_EXERCISES = 5


def label(number: int) -> str:
    """How answers.md names a study: "Exercise 4" for the book's, "Study 6" for those beyond."""
    return f"Exercise {number}" if number <= BOOK_EXERCISES else f"Study {number}"


#: The folders an exercise run writes, under its out_dir.
LAYOUT = ("results", "results/raw", "figures")
#: Seconds each study takes in one process on this project's machine (training, tables and
#: figures): the slowest are handed out first.
STUDY_COST = {2: 40.0, 5: 20.0, 6: 10.0, 7: 8.0, 4: 4.0, 1: 3.0, 3: 2.5}


def check_numbers(numbers: Any) -> list[int]:
    """The exercise numbers, refused (ParameterError) unless each is one of SPECS."""
    numbers = list(numbers)
    unknown = [n for n in numbers if n not in SPECS]
    if unknown or not numbers:
        raise ParameterError(
            "numbers",
            "parameter of run_exercises",
            f"among {sorted(SPECS)}",
            unknown[0] if len(unknown) == 1 else unknown,
        )
    return numbers


def study_grid(number: int, quick: bool = False) -> Grid:
    """Exercise ``number``'s grid, from its spec (smaller with ``quick``)."""
    name, smaller = SPECS[number]
    spec = importlib.resources.files(__package__).joinpath(SPECS_FOLDER).joinpath(f"{name}.toml")
    with importlib.resources.as_file(spec) as path:
        grid = load_grid(path)
    return Grid(**{**grid.to_dict(), **smaller}) if quick else grid


def study_workers(numbers: Sequence[int] | None, n_jobs: int) -> int:
    """How many processes run the studies (1: the caller's own)."""
    import joblib

    count = len(SPECS) if numbers is None else len(numbers)
    return max(1, min(count, joblib.cpu_count() if n_jobs == -1 else n_jobs))


_executor: tuple[int, Any] | None = None  # (workers, the executor) while it is running


def study_executor(workers: int):
    """The ``workers`` processes the studies run in: started on the first call, the same ones on
    the next (so that a caller who asks early, as study exercises does before its own imports,
    finds them started, with torch and matplotlib imported) until :func:`stop_workers`. loky's,
    not its shared reusable executor, which joblib reconfigures for run_grid. Ctrl-C is the
    parent's to handle: the workers ignore it."""
    global _executor
    if _executor is None or _executor[0] != workers:
        stop_workers()
        from joblib.externals.loky import ProcessPoolExecutor

        _executor = (workers, ProcessPoolExecutor(max_workers=workers, initializer=_ignore_interrupts))
    return _executor[1]


def stop_workers() -> None:
    """Stop the studies' worker processes now (the next study_executor starts new ones)."""
    global _executor
    if _executor is not None:
        _executor[1].shutdown(wait=True, kill_workers=True)
        _executor = None


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def warm_up() -> None:
    """A worker's first task: import the studies (torch, pandas, matplotlib), and return
    nothing (a module sent back would be imported by the caller)."""
    import importlib

    importlib.import_module(f"{__package__}.exercises")


def _study_task(
    number: int, grid: Grid, *, out_dir: Path, n_jobs: int, progress: bool, formats: tuple[str, ...], keep: bool
) -> tuple[int, Any, int, float, list[Path]]:
    from .exercises import run_study

    outcome, runs, seconds, written = run_study(
        number, grid, out_dir=out_dir, n_jobs=n_jobs, progress=progress, formats=formats
    )
    return number, outcome if keep else outcome.answer, runs, seconds, written


def run_studies(
    numbers: Sequence[int] | None = None,
    *,
    quick: bool = False,
    out_dir: str | Path = ".",
    n_jobs: int = -1,
    progress: bool = True,
    log: Callable[[str], None] = print,
    formats: Sequence[str] = (".png",),
    keep: bool = True,
) -> dict[int, Any]:
    """Run the studies (all seven by default) and write their tables, figures and answers under
    ``out_dir`` (see :func:`study.exercises.run_exercises`).

    With ``n_jobs`` -1 (or above 1) and several studies, each study runs in a worker process,
    the slowest first; with one worker, in this process. Returns exercise number -> its
    :class:`~study.exercises.Outcome` (``keep``) or its answer's text.
    """
    out_dir = Path(out_dir)
    numbers = sorted(SPECS) if numbers is None else check_numbers(numbers)
    formats = tuple(formats)
    if not formats or any(f not in FIGURE_FORMATS for f in formats):
        raise ParameterError("formats", "parameter of run_exercises", f"some of {list(FIGURE_FORMATS)}", list(formats))
    if not out_dir.is_dir():
        raise ParameterError("out_dir", "parameter of run_exercises", "a folder that exists", str(out_dir))
    grids = {n: study_grid(n, quick) for n in numbers}  # every spec checked before any work
    for folder in LAYOUT:
        if not (out_dir / folder).is_dir():
            (out_dir / folder).mkdir()
            log(f"created folder {out_dir / folder}")
    workers = study_workers(numbers, n_jobs)
    order = sorted(numbers, key=lambda n: STUDY_COST.get(n, 0.0), reverse=True)
    task: dict[str, Any] = dict(out_dir=out_dir, formats=formats, keep=keep)
    results: dict[int, Any] = {}
    if workers > 1:
        executor = study_executor(workers)
        futures = [executor.submit(_study_task, n, grids[n], n_jobs=1, progress=False, **task) for n in order]
        done = (future.result() for future in concurrent.futures.as_completed(futures))
    else:
        executor, done = None, (_study_task(n, grids[n], n_jobs=n_jobs, progress=progress, **task) for n in order)
    try:
        for n, result, runs, seconds, written in done:
            results[n] = result
            log(f"{label(n).lower()}: {runs} runs, {seconds:.1f} s: " + ", ".join(map(str, written)))
    except BaseException:
        if executor is not None:  # interrupted, or a study failed: the others need not finish
            stop_workers()
        raise
    path = out_dir / "results" / "answers.md"
    answers = _earlier_answers(path)  # the exercises not run this time keep their answers (as their figures stay)
    answers.update((n, results[n].answer if keep else results[n]) for n in results)
    path.write_text("\n\n".join(f"**{label(n)}.** {answers[n]}" for n in sorted(answers)) + "\n", encoding="utf-8")
    return results


def _earlier_answers(path: Path) -> dict[int, str]:
    """Exercise number -> its answer in an answers.md written before (empty when there is none)."""
    if not path.is_file():
        return {}
    parts = re.split(r"^\*\*(?:Exercise|Study) (\d+)\.\*\* ", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {int(n): text.strip() for n, text in zip(parts[1::2], parts[2::2]) if int(n) in SPECS}
