"""The exercises of d2l §3.5 as studies: a grid, tables, figures and a short answer each.

Each study reads its grid from ``study/exercises/specs/<name>.toml`` (package data), runs it with
:func:`study.run_grid` (the raw table goes to ``results/raw/<name>.parquet``, git-ignored), and
writes its summary tables to ``results/``, its figures to ``figures/`` (PNG, or the formats asked
for), and its answer to ``results/answers.md``. Every number in a figure or an answer is computed
from the table the study ran: counts, ranges, slopes and their signs. ``quick=True`` shrinks
every grid (fewer replicates, sizes and epochs) for a preview in seconds.

The package follows the work: ``catalog`` (the specs, light), ``pool`` (the studies in processes
of their own), ``studies`` (each number's analysis, run and written out), one module per study
(``ex1_reduction`` ... ``ex7_weight_decay``) and ``common`` (estimates with their precision).
Importing it is light: the analyses, with torch and matplotlib, load on first use.
"""

from __future__ import annotations

import importlib

from .pool import run_exercises

#: The heavy names, imported on first use (``study exercises`` starts its worker processes
#: before it imports torch).
_LAZY = {
    "STUDIES": "studies",
    "Study": "studies",
    "EXERCISE_FIGURES": "studies",
    "exercise_figure": "studies",
    "Outcome": "common",
    "seed_example": "demo",
}

__all__ = ["run_exercises", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'study.exercises' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
