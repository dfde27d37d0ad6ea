"""This machine's pace: how far the time estimates were off here, kept between runs.

A grid's time is estimated before it runs (``study run --dry-run``, the first line of ``study
run``) from cost models fitted on this project's machine and one H200. Another machine is
faster or slower, by 2x and more. So every run_grid that trains long enough to tell
(MIN_SECONDS) records the ratio of the time its training took to the model's estimate, by
engine and kind of device, and the next estimate is scaled by the median of the last few
(KEEP). The file is a small JSON in the user's cache folder (``$STUDY_CACHE_DIR``, else
``$XDG_CACHE_HOME/estimation-study``, else ``~/.cache/estimation-study``); a folder that cannot
be written leaves the estimates as the models give them, and says nothing.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

__all__: list[str] = []  # private: see study/__init__.py

#: Runs whose training took less than this many seconds are not recorded: their time is the
#: start of workers and imports more than training.
MIN_SECONDS = 5.0
#: The measurements kept per engine and device: the median of the last few follows a machine
#: that changed (another load, another CPU) within a few runs, and one odd run moves it little.
KEEP = 5
FILE = "pace.json"


def cache_folder() -> Path:
    if os.environ.get("STUDY_CACHE_DIR"):
        return Path(os.environ["STUDY_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "estimation-study"


def kind(engine: str, devices: list[str]) -> str:
    """What a pace is kept for: the engine, and the kind of device ("batched/cpu")."""
    return f"{engine}/{'cuda' if devices and devices[0].startswith('cuda') else 'cpu'}"


def _read() -> dict[str, list[float]]:
    try:
        data = json.loads((cache_folder() / FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: [float(x) for x in v if isinstance(x, (int, float)) and x > 0]
        for k, v in data.items()
        if isinstance(v, list)
    }


def factor(key: str) -> tuple[float, int]:
    """The factor to scale an estimate by on this machine, and how many runs it comes from
    (1.0 and 0 before any was recorded)."""
    ratios = _read().get(key, [])
    return (statistics.median(ratios), len(ratios)) if ratios else (1.0, 0)


def record(key: str, estimated: float, actual: float) -> None:
    """Keep actual / estimated for ``key``, where the run was long enough to tell; nothing
    (and no complaint) where the cache cannot be written."""
    if actual < MIN_SECONDS or estimated <= 0:
        return
    data = _read()
    data[key] = [*data.get(key, []), actual / estimated][-KEEP:]
    folder = cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Atomic, so that two runs that end together leave one of their files, never a mix.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{FILE}.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, folder / FILE)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
