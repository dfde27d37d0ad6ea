"""The studies by number: each one's spec, analysis and quick grid, run and written out."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from ..analysis import open_table
from ..errors import ParameterError
from ..grid import Grid
from ..plots import save_figure
from ..runner import run_grid
from ..schema import SUMMARY_DIGITS, write_csv
from .catalog import EXERCISE_FIGURES, SPECS
from .common import (
    Outcome,
)
from .ex1_reduction import ex1_reduction
from .ex2_huber import ex2_huber
from .ex3_gradients import ex3_gradients
from .ex4_lr_epochs import ex4_lr_epochs
from .ex5_data_size import ex5_data_size
from .ex6_reaching_the_limit import ex6_reaching_the_limit
from .ex7_weight_decay import ex7_weight_decay


@dataclass(frozen=True)
class Study:
    number: int
    name: str
    analyse: Callable[[Any], Outcome]  # a results table: a DataFrame, a path or a study.analysis.Table
    quick: dict  # overrides of the grid for --quick


_ANALYSES = {
    1: ex1_reduction,
    2: ex2_huber,
    3: ex3_gradients,
    4: ex4_lr_epochs,
    5: ex5_data_size,
    6: ex6_reaching_the_limit,
    7: ex7_weight_decay,
}


STUDIES = {n: Study(n, name, _ANALYSES[n], quick) for n, (name, quick) in SPECS.items()}


def run_study(
    number: int,
    grid: Grid,
    *,
    out_dir: Path,
    n_jobs: int = -1,
    progress: bool = True,
    formats: Sequence[str] = (".png",),
) -> tuple[Outcome, int, float, list[Path]]:
    """One study: its grid run (the raw table in results/raw/, its runs kept in the store beside
    it), its tables and figures written under ``out_dir``. Returns its outcome, its runs, its
    seconds and the files written."""
    study, started = STUDIES[number], time.perf_counter()
    raw = out_dir / "results" / "raw" / f"{study.name}.parquet"
    run_grid(grid, out=raw, n_jobs=n_jobs, progress=progress, frame=False)
    outcome = study.analyse(raw)  # from the file, as a table of any size is: never loaded whole
    written = []
    for name, table in outcome.tables.items():
        write_csv(table, out_dir / "results" / f"{name}.csv", significant=SUMMARY_DIGITS)
        written.append(out_dir / "results" / f"{name}.csv")
    for name, fig in outcome.figures.items():
        written += save_figure(fig, out_dir / "figures" / f"{name}.png", formats=formats)
    return outcome, grid.n_runs, time.perf_counter() - started, written


def exercise_figure(table: Any, name: str) -> plt.Figure:
    """One study's figure, drawn from its raw table as the study draws it (``study plot
    --figure ex4_lr_epochs``). ``table``: a DataFrame, a results file's path or a
    :class:`study.Table`. Its other figures are closed."""
    if name not in EXERCISE_FIGURES:
        raise ParameterError("figure", "parameter of exercise_figure", f"one of {list(EXERCISE_FIGURES)}", name)
    figures = STUDIES[EXERCISE_FIGURES[name]].analyse(open_table(table)).figures
    for other, fig in figures.items():
        if other != name:
            plt.close(fig)
    return figures[name]
