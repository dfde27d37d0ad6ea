"""Running the exercise studies: their grids, and each study in a process of its own where there
are cores to spare.

Importable without torch, pandas or matplotlib, which take about 3 s to import: ``study
exercises`` starts its worker processes before anything heavy is imported, so that their imports
overlap, and the studies themselves (:mod:`study.exercises.studies`: the analyses, tables and
figures) are imported only by the processes that run them. The studies are independent, and most of a
study's time is its figures, which one process draws alone: on two cores the five run in about
half the time. Their specs are in :mod:`study.exercises.catalog`.
"""

from __future__ import annotations

import concurrent.futures
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError
from ..grid import Grid
from ..vocabulary import FIGURE_FORMATS

if TYPE_CHECKING:
    from .common import Outcome

from .catalog import LAYOUT, SPECS, STUDY_COST, check_numbers, label, study_grid


def run_exercises(
    numbers=None,
    *,
    quick: bool = False,
    out_dir: str | Path = ".",
    n_jobs: int = -1,
    progress: bool = True,
    log: Callable[[str], None] = print,
    formats: Sequence[str] = (".png",),
) -> dict[int, Outcome]:
    """Run the studies (all seven by default) and write their tables, figures and answers under
    ``out_dir``: results/ (summary CSVs, answers.md), results/raw/ (the raw tables) and
    figures/ (in each of ``formats``: ".png", ".svg", ".pdf"). ``out_dir`` must exist; the
    folders under it are created as needed, each named through ``log``. With ``n_jobs`` -1 or
    above 1, the studies run side by side, one process each (see :mod:`study.exercises.pool`).

    Returns
    -------
    dict
        Exercise number -> :class:`Outcome` (its figures closed once written).
    """
    return run_studies(
        numbers, quick=quick, out_dir=out_dir, n_jobs=n_jobs, progress=progress, log=log, formats=formats, keep=True
    )


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

        _executor = (workers, ProcessPoolExecutor(max_workers=workers, initializer=_init_worker))
    return _executor[1]


def stop_workers() -> None:
    """Stop the studies' worker processes now (the next study_executor starts new ones)."""
    global _executor
    if _executor is not None:
        _executor[1].shutdown(wait=True, kill_workers=True)
        _executor = None


def _init_worker() -> None:
    """A study worker's start: Ctrl-C is the parent's to handle, and no restart for growing.

    loky restarts a worker whose memory grew 300 MB past its size after its first task (the
    warm-up), taking it for a leak. A study's tables and figures grow it that much by design; the
    restart cost a new worker's imports (seconds) and printed "A worker stopped while some jobs
    were given to the executor ... memory leak" in ``make run``. A study's memory is freed when
    it ends, and ``study exercises`` stops its workers when done (stop_workers). (The limit is a
    private name of loky's, read at each check.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from joblib.externals.loky import process_executor

    process_executor._MAX_MEMORY_LEAK_SIZE = sys.maxsize


def warm_up() -> None:
    """A worker's first task: import the studies (torch, pandas, matplotlib), and return
    nothing (a module sent back would be imported by the caller)."""
    import importlib

    importlib.import_module(f"{__package__}.studies")


def _study_task(
    number: int, grid: Grid, *, out_dir: Path, n_jobs: int, progress: bool, formats: tuple[str, ...], keep: bool
) -> tuple[int, Any, int, float, list[Path]]:
    from .studies import run_study

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
