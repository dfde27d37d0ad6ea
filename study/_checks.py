"""One argument checker, so that every refusal reads the same way.

A message names the parameter, where it entered, what is allowed and what was passed:
"The 'lr' parameter of LinearRegression must be a finite number > 0. Got -0.1 instead."
``where`` is the phrase after the name: "parameter of LinearRegression", "key of [grid] in x.toml".
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any, NoReturn

from .errors import ParameterError

__all__: list[str] = []  # private: see study/__init__.py


def fail(name: str, where: str, allowed: str, value: Any) -> NoReturn:
    """Refuse a value: a ParameterError (a ValueError) that keeps its parts, so that a command
    can say it with the flag the user typed."""
    raise ParameterError(name, where, allowed, value)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_int(value: Any, name: str, where: str, *, low: int = 0) -> int:
    """An integer >= low (bools are refused: True is not a size)."""
    if not _is_int(value) or value < low:
        fail(name, where, f"an integer >= {low}", value)
    return int(value)


def check_real(value: Any, name: str, where: str, *, low: float = 0.0, strict: bool = True) -> float:
    """A finite real number > low (or >= low when strict is False)."""
    relation = ">" if strict else ">="
    if not _is_real(value) or not math.isfinite(value) or (value <= low if strict else value < low):
        fail(name, where, f"a finite number {relation} {low:g}", value)
    return float(value)


def check_choice(value: Any, name: str, where: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        fail(name, where, f"one of {list(choices)}", value)
    return value


def check_vector(value: Any, name: str, where: str) -> list[float]:
    """A non-empty list of finite numbers (a torch tensor or numpy array is accepted too)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(_is_real(v) and math.isfinite(v) for v in value):
        fail(name, where, "a non-empty list of finite numbers", value)
    return [float(v) for v in value]


def check_output(out: str | Path, where: str = "parameter of run_grid") -> Path:
    """Refuse an output path that cannot be written, before any work starts.

    The nearest folder that exists on the way to ``out`` must take a new file: a probe file is
    created there and removed at once, which also catches what permission bits do not say
    (a read-only file system, ``/proc``, a user allowed everything but the disk).
    """
    try:
        out = Path(out)
    except TypeError:
        fail("out", where, "a path ending in .csv or .parquet", out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        fail("out", where, "a path ending in .csv or .parquet", str(out))
    try:
        if out.is_dir():
            fail("out", where, "a file path, not a folder", str(out))
        existing = next((p for p in (out.parent, *out.parent.parents) if p.exists()), Path("."))
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            fail("out", where, "a path in a folder that can be written", str(out))
        if out.exists() and not os.access(out, os.W_OK):
            fail("out", where, "a file that can be written", str(out))
        fd, probe = tempfile.mkstemp(prefix=".study-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:  # too long a name, a read-only file system, no space left...
        fail("out", where, f"a path that can be written ({err.strerror or err})", str(out))
    return out
