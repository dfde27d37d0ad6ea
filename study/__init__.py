"""estimation-study: how well minibatch SGD on d2l's concise linear regression recovers w and b.

The modules follow the data's path: streams → data → model → train/engine → plan → runner →
results → plots.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: What ``from study import X`` gives, and the module it comes from. Imported on first use
#: only: torch, pandas and matplotlib take seconds to import, and ``study --help`` or a refused
#: spec should not wait for them.
_EXPORTS = {
    "SyntheticRegressionData": "data",
    "LinearRegression": "model",
    "Trainer": "train",
    "Grid": "grid",
    "load_grid": "grid",
    "log_sizes": "grid",
    "run_grid": "runner",
    "summarize": "results",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # once imported, an attribute like any other
        return value
    raise AttributeError(f"module 'study' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
