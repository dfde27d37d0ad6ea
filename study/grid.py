"""Grids of runs: axes, settings, TOML specs, run identities and seeds.

One vocabulary everywhere: a Grid's axis names, the TOML keys and the CSV columns are the same
words. A run is one cell of the grid (one value per axis, ``epoch`` aside) times one replicate.

``epoch`` is a checkpoint axis: every run trains once to the largest epoch asked for and is
recorded at each epoch listed (and at epoch 0, the start).

Seeds (common random numbers): a run's stream is seeded from the base ``seed``, the
``replicate`` and the data settings (num_train, num_val, noise, noise_kind, batch_size) alone.
Runs that differ only in lr, loss, sigma or reduction therefore see the same data, the same
start and the same minibatch order, and comparisons between them are paired.

Seeds and run keys are computed as arrays, so that a grid of millions of runs is planned in
seconds: a cell's settings are hashed once (the first 8 bytes of the sha256 of their canonical
JSON), and each replicate's 64-bit value is splitmix64's mixing function (Steele, Lea and Flood,
OOPSLA 2014) of that hash plus (replicate + 1) times the golden ratio, a bijection of the
replicate for each cell. A seed keeps 63 of those bits (it fits an int64 column).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import itertools
import json
import re
import tomllib
import warnings
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._checks import check_choice, check_int, check_real, check_vector, fail
from .vocabulary import AXES, LOSSES, NOISE_KINDS, REDUCTIONS, RUN_AXES, SETTINGS, STREAM_KEYS, STREAMS

__all__ = ["Grid", "Run", "AXES", "SETTINGS", "STREAM_KEYS", "log_sizes", "load_grid", "stream_seeds", "run_keys"]



def log_sizes(start: int, stop: int) -> list[int]:
    """The 1-2-5 sequence between start and stop, inclusive: log_sizes(5, 10_000) gives
    [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]."""
    check_int(start, "start", "parameter of log_sizes", low=1)
    check_int(stop, "stop", f"parameter of log_sizes (start={start})", low=start)
    sizes = []
    for decade in itertools.count():
        for mantissa in (1, 2, 5):
            size = mantissa * 10**decade
            if size > stop:
                return sizes
            if size >= start:
                sizes.append(size)
    raise AssertionError("unreachable")  # pragma: no cover


def _check_axis_value(axis: str, value: Any, where: str) -> Any:
    if axis in ("num_train", "batch_size", "epoch"):
        return check_int(value, axis, where, low=1)
    if axis in ("lr", "sigma"):
        return check_real(value, axis, where)
    if axis == "noise":
        return check_real(value, axis, where, low=0.0, strict=False)
    choices = {"loss": LOSSES, "reduction": REDUCTIONS, "noise_kind": NOISE_KINDS}[axis]
    return check_choice(value, axis, where, choices)


def _check_axis(axis: str, values: Any, where: str) -> list:
    if not isinstance(values, (list, tuple)):
        values = [values]
    if not values:
        fail(axis, where, "a value or a non-empty list of values", values)
    checked = [_check_axis_value(axis, v, where) for v in values]
    unique = list(dict.fromkeys(checked))
    if len(unique) < len(checked):
        warnings.warn(
            f"Grid axis {axis!r} has {len(checked) - len(unique)} duplicate value(s); each value is run once.",
            stacklevel=4,
        )
    return unique


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's mixing function, a bijection of uint64 words (NumPy's uint64 wraps)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _derive(cell_hash: int, replicate: Any) -> np.ndarray:
    """The 64-bit value of each replicate of a cell (see the module's docstring)."""
    rep = np.asarray(replicate, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64(np.uint64(cell_hash) + (rep + np.uint64(1)) * _GOLDEN)


@functools.lru_cache(maxsize=65536)
def _hash64(canonical: str) -> int:
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big")


def _canonical(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def stream_seeds(settings: Mapping[str, Any], base_seed: int, replicate: Any) -> np.ndarray:
    """int64 seeds of the given replicates of one stream cell: ``settings`` holds STREAM_KEYS."""
    doc = {k: settings[k] for k in STREAM_KEYS}
    doc.update(seed=base_seed)
    return (_derive(_hash64(_canonical(doc)), replicate) >> np.uint64(1)).astype(np.int64)


def run_keys(settings: Mapping[str, Any], replicate: Any) -> np.ndarray:
    """uint64 keys of the given replicates of one run cell: ``settings`` holds every field of
    :class:`Run` but ``replicate`` and ``index``, and the grid's ``stream``."""
    return _derive(_hash64(_canonical(settings)), replicate)


@dataclass(frozen=True)
class Run:
    """One training: one value of every run axis, one replicate, and the grid's settings."""

    num_train: int
    lr: float
    loss: str
    sigma: float
    reduction: str
    batch_size: int
    noise: float
    noise_kind: str
    replicate: int
    w: tuple[float, ...]
    b: float
    num_val: int
    base_seed: int
    index: int  # position in the grid's order; rows are sorted by it
    stream: str = "counter"

    @cached_property
    def key(self) -> str:
        """A stable identity (16 hex digits) of everything that defines the run, the stream
        included, the same in every process and session (see the module's docstring)."""
        cell = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("index", "replicate")}
        return f"{int(run_keys(cell, [self.replicate])[0]):016x}"

    @cached_property
    def seed(self) -> int:
        """The seed of this run's stream (data, start, permutations)."""
        return int(stream_seeds(vars(self), self.base_seed, [self.replicate])[0])


@dataclass
class Grid:
    """A grid of runs: each axis a list of values, each setting one value.

    Parameters
    ----------
    num_train, lr, epoch, loss, sigma, reduction, batch_size, noise, noise_kind : list
        The axes. A single value is taken as a one-value axis. ``epoch`` lists checkpoints.
    w : list of float, default=[2, -3.4]
    b : float, default=4.2
    num_val : int, default=1000
    replicates : int, default=1
        Independent repetitions of every cell (each its own data, start and order).
    seed : int, default=0
        The base seed; every run's own seed is derived from it (see the module's docstring).
    stream : {"counter", "torch"}, default="counter"
        Where runs draw their random numbers (:mod:`study.streams`): ``counter``, Philox
        numbers drawn on the chunk's device for all runs at once, the same on a CPU and a GPU;
        ``torch``, one CPU ``torch.Generator`` per run in the book's own order.
    name, description : str
        Labels of the study; ``name`` names its output files.

    Examples
    --------
    >>> grid = Grid(num_train=log_sizes(5, 50), lr=[0.01, 0.1], epoch=[1, 3], replicates=2)
    >>> len(grid.runs()), grid.max_epoch
    (16, 3)
    """

    num_train: list[int] = field(default_factory=lambda: [1000])
    lr: list[float] = field(default_factory=lambda: [0.03])
    epoch: list[int] = field(default_factory=lambda: [3])
    loss: list[str] = field(default_factory=lambda: ["squared"])
    sigma: list[float] = field(default_factory=lambda: [1.0])
    reduction: list[str] = field(default_factory=lambda: ["mean"])
    batch_size: list[int] = field(default_factory=lambda: [32])
    noise: list[float] = field(default_factory=lambda: [0.01])
    noise_kind: list[str] = field(default_factory=lambda: ["gaussian"])
    w: list[float] = field(default_factory=lambda: [2.0, -3.4])
    b: float = 4.2
    num_val: int = 1000
    replicates: int = 1
    seed: int = 0
    stream: str = "counter"
    name: str = "grid"
    description: str = ""

    def __post_init__(self) -> None:
        self._validate("parameter of Grid")

    def _validate(self, where: str) -> None:
        for axis in AXES:
            setattr(self, axis, _check_axis(axis, getattr(self, axis), where))
        self.epoch = sorted(self.epoch)
        self.w = check_vector(self.w, "w", where)
        self.b = check_real(self.b, "b", where, low=-float("inf"))
        self.num_val = check_int(self.num_val, "num_val", where, low=1)
        self.replicates = check_int(self.replicates, "replicates", where, low=1)
        self.seed = check_int(self.seed, "seed", where, low=0)
        self.stream = check_choice(self.stream, "stream", where, STREAMS)
        _check_labels(self.name, self.description, where)

    @property
    def max_epoch(self) -> int:
        return self.epoch[-1]

    @property
    def checkpoints(self) -> list[int]:
        """The epochs recorded: 0 (the start) and every epoch asked for."""
        return [0, *self.epoch]

    def runs(self) -> list[Run]:
        """Every run of the grid, in grid order (axes in AXES order, replicate innermost)."""
        cells = itertools.product(*(getattr(self, a) for a in RUN_AXES), range(self.replicates))
        return [
            Run(**dict(zip(RUN_AXES, cell[:-1])), replicate=cell[-1], w=tuple(self.w), b=self.b,
                num_val=self.num_val, base_seed=self.seed, index=i, stream=self.stream)
            for i, cell in enumerate(cells)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what the TOML ``[grid]`` table holds, plus name/description)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_labels(name: Any, description: Any, where: str) -> None:
    # The name names output files (results/NAME.csv), so it must be safe as a file name.
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        fail("name", where, "a file-name-safe string (letters, digits, '_', '.', '-')", name)
    if not isinstance(description, str):
        fail("description", where, "a string", description)


def grid_from_mapping(table: Mapping[str, Any], *, name: str, description: str = "", where: str) -> Grid:
    """Validate a ``[grid]`` table with messages that say where the value came from."""
    valid = (*AXES, *SETTINGS)
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"Unknown key {key!r} in {where}{hint}; valid keys are {list(valid)}.")
    grid = Grid.__new__(Grid)
    defaults = Grid()
    for f in fields(Grid):
        setattr(grid, f.name, table.get(f.name, getattr(defaults, f.name)))
    grid.name, grid.description = name, description
    grid._validate(f"key of {where}")
    return grid


def load_grid(path: str | Path) -> Grid:
    """Read a TOML spec: optional top-level ``name`` (default: the file's stem) and
    ``description``, and a ``[grid]`` table of axes and settings. Everything is checked
    before any work starts; a bad spec raises ValueError (FileNotFoundError if missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No spec file at {str(path)!r}.")
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not a valid TOML file: {err}.") from None
    top = ("name", "description", "grid")
    for key in spec:
        if key not in top:
            raise ValueError(f"Unknown top-level key {key!r} in {path.name}; valid keys are {list(top)}.")
    if not isinstance(spec.get("grid"), dict):
        raise ValueError(f"{path.name} must have a [grid] table; got {spec.get('grid')!r}.")
    # Without a name key, the file's stem, made safe: "my study.toml" is named "my_study".
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("_.-") or "grid"
    name, description = spec.get("name", stem), spec.get("description", "")
    _check_labels(name, description, f"key of {path.name}")
    return grid_from_mapping(spec["grid"], name=name, description=description, where=f"[grid] in {path.name}")
