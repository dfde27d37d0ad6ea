"""Which rows and axes a table, a figure or a summary shows, and what it would pool over.

The axes a table varies in (what a figure would pool over), the rows at one checkpoint
(:func:`at_epoch`) and the rows a ``--where KEY=VALUE`` chooses (:func:`parse_where`,
:func:`select`). Nothing here imports torch."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import ParameterError
from .vocabulary import AXES, DATA_AXES
from .words import values_text

__all__: list[str] = []  # private: see study/__init__.py


def default_by(table: Any) -> list[str]:
    """The grid axes that take more than one value in the table, and epoch."""
    from .analysis import open_table

    varying = open_table(table).varying((), AXES)
    return [a for a in AXES if a == "epoch" or a in varying]


#: The columns of least squares on the run's own training data. They depend on the data alone
#: (not on lr, loss, sigma, reduction or epoch, and never diverge), so they are summarized over
#: every run, once per data stream.
LEAST_SQUARES = ("ols_w_err_norm", "ols_b_err", "ols_b_err_abs")


def axes_of(column: str) -> tuple[str, ...]:
    """The axes a column's values depend on: every axis, or the data's for least squares."""
    return DATA_AXES if column in LEAST_SQUARES else AXES


def varying_axes(table: Any, placed: Sequence[str | None] = (), axes: Sequence[str] = AXES) -> dict[str, list]:
    """The axes (of ``axes``) that take more than one value among rows that agree on every
    column of ``placed``: what a figure or table with those columns would pool over.

    ``table``: a DataFrame, a results file's path, or a :class:`study.analysis.Table`.
    ``placed`` may hold derived columns (a label made of loss and sigma): an axis they
    determine is not pooled, whatever the column is called.
    """
    from .analysis import open_table

    return open_table(table).varying(placed, axes)


def column_list(value: Any, name: str, where: str) -> list[str]:
    """A column name or a list of them (a string is one name, never its letters)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise ParameterError(name, where, "a column name or a non-empty list of them", value)
    return list(value)


def at_epoch(
    table: Any, epoch: int | None = None, *, placed: Sequence[str | None] = (), where: str = "parameter of at_epoch"
) -> tuple[Any, str]:
    """The rows at one checkpoint, and the words that say which.

    ``table``: a DataFrame (rows of it come back) or a path or Table (a Table comes back).
    ``epoch=None``: where ``epoch`` is among ``placed`` (a column of the table or the figure),
    every checkpoint; otherwise each run's last checkpoint, which the words name ("epoch 10,
    the last checkpoint").
    """
    from .analysis import open_table

    t = open_table(table)
    frame = isinstance(table, pd.DataFrame)
    checkpoints = [int(e) for e in t.values("epoch")]
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or int(epoch) not in checkpoints:
            raise ParameterError("epoch", where, f"one of the table's checkpoints ({values_text(checkpoints)})", epoch)
        return (table[table["epoch"] == epoch] if frame else t.select({"epoch": [int(epoch)]})), f"epoch {int(epoch)}"
    if "epoch" in placed:
        return (table if frame else t), f"every checkpoint (epochs {values_text(checkpoints)})"
    last_all = checkpoints[-1] if checkpoints else 0
    rows, ends = t.last_checkpoints()
    if frame:
        rows = table[table["epoch"] == ends[0]] if len(ends) == 1 else rows.frame()
    if ends == [last_all]:
        return rows, f"epoch {last_all} (the last checkpoint)"
    return rows, f"each run's last checkpoint (epochs {values_text(ends)})"


def parse_where(table: Any, items: Sequence[str], *, where: str = "parameter of parse_where") -> dict[str, list]:
    """``["loss=huber", "lr=0.01,0.03"]`` as ``{"loss": ["huber"], "lr": [0.01, 0.03]}``, each
    value read as its column's type and checked against the values the table holds
    (``table``: a DataFrame, a results file's path, or a study.analysis.Table)."""
    from .analysis import open_table

    t = open_table(table) if items else None
    allowed_keys = [a for a in AXES if t is not None and a in t.columns]
    chosen: dict[str, list] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ParameterError("where", where, "KEY=VALUE, e.g. loss=huber or lr=0.01,0.03", item)
        if key not in allowed_keys:
            raise ParameterError(
                "where", where, f"KEY=VALUE with KEY one of the table's axes ({', '.join(allowed_keys)})", item
            )
        if key in chosen:
            raise ParameterError("where", where, f"given once for each axis ({key} is given twice)", item)
        assert t is not None  # opened above whenever there are items
        present = t.values(key)
        values = []
        for part in text.split(","):
            part = part.strip()
            value = read_as(t.numeric(key), part)
            match = matching_value(present, value)
            if match is None:
                raise ParameterError(
                    "where",
                    where,
                    f"one of the values {key} takes in the table ({key}={values_text(present, limit=12)})",
                    f"{key}={part}",
                )
            values.append(match)
        chosen[key] = list(dict.fromkeys(values))
    return chosen


def read_as(numeric: bool, text: str) -> Any:
    if numeric:
        try:
            return float(text)
        except ValueError:
            return text  # no number matches it: refused with the values the column takes
    return text


def matching_value(present: list, value: Any) -> Any:
    """The value of the table that ``value`` names: equal, or for numbers equal to 1e-9
    relative (0.0316 and 3.16e-2 name the same lr)."""
    for candidate in present:
        if isinstance(value, float) and isinstance(candidate, (int, float, np.integer, np.floating)):
            if math.isclose(float(candidate), value, rel_tol=1e-9, abs_tol=0.0):
                return candidate
        elif str(candidate) == str(value):
            return candidate
    return None


def select(df: Any, where: Mapping[str, Any] | None = None) -> Any:
    """The rows whose value of each axis in ``where`` is the one given (or one of a list): of a
    DataFrame, a DataFrame; of a study.analysis.Table, a Table."""
    if not isinstance(df, pd.DataFrame):
        for key in where or {}:
            if key not in df.columns:
                raise ParameterError(
                    "where",
                    "parameter of select",
                    f"a mapping from the table's columns ({', '.join(a for a in AXES if a in df.columns)})",
                    key,
                )
        return df.select(where)
    mask = np.ones(len(df), dtype=bool)
    for key, wanted in (where or {}).items():
        if key not in df.columns:
            raise ParameterError(
                "where",
                "parameter of select",
                f"a mapping from the table's columns ({', '.join(a for a in AXES if a in df.columns)})",
                key,
            )
        wanted = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        mask &= df[key].isin(wanted).to_numpy()
    return df[mask]
