"""estimation-study: how well minibatch SGD on d2l's concise linear regression recovers w and b.

The modules follow the data's path: data → model → train/engine → runner → results → plots.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .data import SyntheticRegressionData  # noqa: E402
from .grid import Grid, load_grid, log_sizes  # noqa: E402
from .model import LinearRegression  # noqa: E402
from .train import Trainer  # noqa: E402

__all__ = ["SyntheticRegressionData", "LinearRegression", "Trainer", "Grid", "load_grid", "log_sizes", "run_grid", "summarize"]


def __getattr__(name: str):
    # run_grid and summarize pull in joblib, pandas and tqdm: imported on first use only.
    if name == "run_grid":
        from .runner import run_grid

        return run_grid
    if name == "summarize":
        from .results import summarize

        return summarize
    raise AttributeError(f"module 'study' has no attribute {name!r}")
