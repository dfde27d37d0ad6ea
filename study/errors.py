"""Every exception the package raises on purpose, in one place.

Each is also an ordinary built-in exception (``ValueError``, ``RuntimeError``), so code that
catches those keeps working; :class:`StudyError` catches them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .words import describe_axes

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "StudyError",
    "ParameterError",
    "PoolingError",
    "TableError",
    "ChunkFailure",
    "ChunksFailed",
    "OutputBusy",
    "Terminated",
]


class StudyError(Exception):
    """The base of the package's own errors."""


class ParameterError(StudyError, ValueError):
    """A refused argument, in the one shape refusals take: "The 'by' parameter of summarize
    must be ... Got ... instead." It keeps its parts, so that the command line can say the same
    thing with the flag the user typed (``--by``) in place of the parameter's name."""

    def __init__(self, name: str, where: str, allowed: str, value: Any):
        self.name, self.where, self.allowed, self.value = name, where, allowed, value
        super().__init__(f"The {name!r} {where} must be {allowed}. Got {value!r} instead.")

    def as_option(self, flag: str) -> str:
        return f"The {flag!r} option must be {self.allowed}. Got {self.value!r} instead."


class PoolingError(StudyError, ValueError):
    """Axes that vary where a figure or a table shows one value: nothing is pooled silently.
    ``axes`` maps each axis to the values it takes, for a message that says what to choose."""

    def __init__(self, axes: dict[str, list], where: str):
        self.axes = axes
        super().__init__(
            f"{where} would pool over {describe_axes(axes)}; put them on the figure "
            "(hue, style, col, row) or select one value of each."
        )


class TableError(StudyError, ValueError):
    """A file that is not a results table, or a selection of it that holds no rows."""


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk that gave no rows: which runs it held and why."""

    chunk_id: str
    runs: int  # how many runs the chunk held
    cells: str  # the grid coordinates its runs span, e.g. "num_train=13, batch_size=32, lr=[0.01, 0.1]"
    reason: str

    def __str__(self) -> str:
        return f"chunk {self.chunk_id[:12]} ({self.runs} runs: {self.cells}): {self.reason}"


class ChunksFailed(StudyError, RuntimeError):
    """Some chunks gave no rows; the others were saved (and written as ``NAME.partial.csv``).

    Attributes
    ----------
    failures : list of ChunkFailure
    partial : DataFrame or None
        The rows of the runs that finished, in grid order (None if none did).
    partial_path : Path or None
        Where those rows were written, when run_grid had an output path.
    """

    def __init__(
        self,
        failures: Sequence[ChunkFailure],
        n_chunks: int,
        n_runs: int,
        partial: pd.DataFrame | None = None,
        partial_path: Path | None = None,
        resumable: bool = False,
    ) -> None:
        self.failures = list(failures)
        self.partial = partial
        self.partial_path = partial_path
        failed_runs = sum(f.runs for f in self.failures)
        message = f"{len(self.failures)} of {n_chunks} chunks ({failed_runs} of {n_runs} runs) failed"
        if partial_path is not None:
            message += f"; the runs that finished are in {partial_path}"
        if resumable:
            message += "; run again to compute only the failed chunks"
        super().__init__(message)


class OutputBusy(StudyError, RuntimeError):
    """Another process is writing the same output."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that it stops the same way: the chunks in
    flight are cancelled, the finished ones are kept. (A KeyboardInterrupt, not a StudyError.)"""
