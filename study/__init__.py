"""estimation-study: how well minibatch SGD on d2l's concise linear regression recovers w and b.

What users import is exported here; the closed forms are in :mod:`study.theory`, the figures in
:mod:`study.plots`, the studies in :mod:`study.exercises` and the exceptions in
:mod:`study.errors`. The modules follow the data's path: streams → data → model → train/engine →
plan → runner → schema → summaries/comparisons/fits → plots.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: What ``from study import X`` gives, and the module it comes from. Imported on first use
#: only: torch, pandas and matplotlib take seconds to import, and ``study --help`` or a refused
#: spec should not wait for them.
_EXPORTS = {
    # the book's model, done right, and the reference loop
    "SyntheticRegressionData": "data",
    "LinearRegression": "model",
    "Trainer": "train",
    # grids and running them
    "Grid": "grid",
    "load_grid": "grid",
    "log_sizes": "grid",
    "Options": "options",
    "run_grid": "runner",
    # tables: reading, summaries with their precision, paired comparisons, fits
    "read_results": "analysis",
    "open_table": "analysis",
    "Table": "analysis",
    "summarize": "summaries",
    "diverged_runs": "summaries",
    "compare": "comparisons",
    "fit_power_law": "fits",
    "PowerLaw": "fits",
    "save_figure": "plots",
    # what goes wrong, on purpose
    "StudyError": "errors",
    "ParameterError": "errors",
    "PoolingError": "errors",
    "TableError": "errors",
    "ChunksFailed": "errors",
    "OutputBusy": "errors",
}

#: The documented sub-modules, with their own ``__all__``: every other module is private (its
#: ``__all__`` names only what is exported here).
PUBLIC_MODULES = ("theory", "plots", "exercises", "errors")

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # once imported, an attribute like any other
        return value
    raise AttributeError(f"module 'study' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
