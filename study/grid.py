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
import math
import re
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from numbers import Integral
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ._checks import _is_int, _is_real, check_choice, check_int, check_real, check_vector, fail
from .vocabulary import (
    APPLIES_ONLY,
    AXES,
    INT_AXES,
    LATER_DEFAULTS,
    LOSSES,
    NO_AVERAGE,
    NOISE_KINDS,
    REDUCTIONS,
    RUN_AXES,
    SETTINGS,
    STREAM_KEYS,
    STREAMS,
)

__all__ = ["Grid", "load_grid", "log_sizes"]


# Every integer up to 2**53 is a float, and none is lost on the way: a float past it may be
# a rounded spelling of another integer (1e17 + 1 == 1e17), so it is refused as a count.
_EXACT = 2**53


def _check_whole(value: Any, name: str, where: str, *, low: int = 0) -> int:
    """check_int, also taking a float that is exactly a whole number (1e3 is 1000, 5.0 is 5).

    TOML has no exponent for integers, so ``num_train = 1e4`` reads as a float. The value is
    stored as a Python int, so that run keys, seeds and tables are those of the int spelling.
    """
    # _is_real, not isinstance(value, Real): typeshed's numbers.Real cannot be compared with an int
    # or passed to int(), so the value is left as it came (Any) for the checks below.
    if _is_real(value) and not isinstance(value, Integral):
        if not (math.isfinite(value) and float(value).is_integer() and abs(value) <= _EXACT):
            fail(name, where, f"an integer >= {low} (a float only if whole and at most 2**53)", value)
        if int(value) < low:
            fail(name, where, f"an integer >= {low}", value)
        return int(value)
    return check_int(value, name, where, low=low)


#: 1, 2 and 3 values a decade are the round sequences 1; 1-3; 1-2-5. More are 10**(k/n), k < n,
#: to 3 significant digits (4: 1, 1.78, 3.16, 5.62), the numbers a user would type for them.
_ROUND_MANTISSAS = {1: ("1",), 2: ("1", "3"), 3: ("1", "2", "5")}
_MAX_PER_DECADE = 100  # far past any use, and short of 254, where 3 significant digits repeat a value


def _mantissas(per_decade: int) -> list[Decimal]:
    if per_decade in _ROUND_MANTISSAS:
        return [Decimal(m) for m in _ROUND_MANTISSAS[per_decade]]
    return [Decimal(f"{10 ** (k / per_decade):.2e}") for k in range(per_decade)]


def _log_range(lo: float, hi: float, per_decade: int, integer: bool) -> list:
    """Every mantissa times a power of ten that lies in [lo, hi], ascending; as ints (rounded,
    half up, without repeats) when ``integer``. Values are built from decimals, so 3e-1 is the
    float 0.3 a user types, not 3 * 0.1 == 0.30000000000000004: run keys match a typed list."""
    mantissas = _mantissas(per_decade)
    first, last = math.floor(math.log10(lo)) - 1, math.floor(math.log10(hi)) + 1
    values: list = []
    for decade in range(max(first, 0) if integer else first, last + 1):
        for mantissa in mantissas:
            exact = mantissa.scaleb(decade)
            value = int(exact.to_integral_value(ROUND_HALF_UP)) if integer else float(exact)
            if lo <= value <= hi and (not values or value != values[-1]):
                values.append(value)
    return values


def _check_per_decade(value: Any, name: str, where: str) -> int:
    if _is_real(value):  # not isinstance(value, Real): see _check_whole
        # An int is compared as it is (math.isfinite cannot take 10**400); a float must be whole.
        if _is_int(value) or (math.isfinite(value) and float(value).is_integer()):
            if 1 <= value <= _MAX_PER_DECADE:
                return int(value)
    fail(name, where, f"an integer from 1 to {_MAX_PER_DECADE}", value)


def log_sizes(start: int, stop: int, per_decade: int = 3) -> list[int]:
    """The 1-2-5 sequence between start and stop, inclusive: log_sizes(5, 10_000) gives
    [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000].

    ``per_decade`` picks the sequence: 1 (1, 10, 100, ...), 2 (1, 3, 10, 30, ...), 3 (1-2-5),
    or more, 10**(k/n) to 3 significant digits rounded to integers (4: 1, 2, 3, 6, 10, 18, 32,
    56, 100, ...). In a TOML spec, ``num_train = { log = [5, 10000] }`` (optionally with
    ``per_decade = n``) gives the same values; see :func:`load_grid`.
    """
    start = _check_whole(start, "start", "parameter of log_sizes", low=1)
    stop = _check_whole(stop, "stop", f"parameter of log_sizes (start={start})", low=start)
    per_decade = _check_per_decade(per_decade, "per_decade", "parameter of log_sizes")
    return _log_range(start, stop, per_decade, integer=True)


def _is_positive_finite(value: Any) -> bool:
    if not _is_real(value):  # not isinstance(value, Real): see _check_whole
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:  # an int past the floats
        return False


#: The axes a log range may give: every numeric one (noise too, though a range never holds 0).
_LOG_AXES = (*INT_AXES, "lr", "sigma", "noise")
_LOG_KEYS = ("log", "per_decade")


def _log_axis(axis: str, table: Mapping[str, Any], where: str) -> list:
    """The values of a log range ``{log = [lo, hi], per_decade = n}`` on a numeric axis.

    Every refusal names the axis and shows the whole table, so the user sees what they wrote.
    """
    shown = dict(table)

    def refuse(allowed: str) -> NoReturn:
        fail(axis, where, allowed, shown)

    if axis not in _LOG_AXES:  # a choice axis: the usual refusal says what is allowed
        _check_axis_value(axis, shown, where)
    if "log" not in table or any(k not in _LOG_KEYS for k in table):
        refuse(
            "a value, a list of values, or a log range {log = [lo, hi]} with an optional per_decade "
            f"(its keys: {list(_LOG_KEYS)})"
        )
    bounds = table["log"]
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
        refuse("a log range whose 'log' is a pair [lo, hi]")
    integer = axis in INT_AXES
    lo: float  # ints on an integer axis
    hi: float
    if integer:
        # A bound that is not a whole number >= 1 is refused with the range it came in.
        try:
            lo, hi = (_check_whole(v, axis, where, low=1) for v in bounds)
        except ValueError:
            refuse("a log range whose bounds are integers >= 1")
    else:
        if not all(_is_positive_finite(v) for v in bounds):
            refuse("a log range whose bounds are finite numbers > 0")
        lo, hi = (float(v) for v in bounds)
    if lo > hi:
        refuse("a log range with lo <= hi")
    try:
        per_decade = _check_per_decade(table.get("per_decade", 3), axis, where)
    except ValueError:
        refuse(f"a log range whose per_decade is an integer from 1 to {_MAX_PER_DECADE}")
    values = _log_range(lo, hi, per_decade, integer)
    if not values:
        sequence = ", ".join(str(m.normalize()) for m in _mantissas(per_decade))
        refuse(f"a log range that holds at least one value ({sequence} times a power of 10)")
    return values


def _check_axis_value(axis: str, value: Any, where: str) -> Any:
    if axis in INT_AXES:
        return _check_whole(value, axis, where, low=1)
    if axis in ("lr", "sigma"):
        return check_real(value, axis, where)
    if axis in ("noise", "lr_decay", "weight_decay"):
        return check_real(value, axis, where, low=0.0, strict=False)
    if axis == "drop_last":
        if isinstance(value, bool):
            return value
        fail(axis, where, "true or false", value)
    if axis == "momentum":
        if _is_real(value) and math.isfinite(value) and 0 <= value < 1:  # _is_real: see _check_whole
            return float(value)
        fail(axis, where, "a number from 0 up to, not including, 1", value)
    if axis == "average_from":
        if value is None or value == NO_AVERAGE:
            return None
        try:
            return _check_whole(value, axis, where, low=0)
        except ValueError:
            fail(axis, where, f"an epoch (an integer >= 0) or {NO_AVERAGE!r}", value)
    choices = {"loss": LOSSES, "reduction": REDUCTIONS, "noise_kind": NOISE_KINDS}[axis]
    return check_choice(value, axis, where, choices)


def _check_axis(axis: str, values: Any, where: str) -> list:
    if isinstance(values, Mapping):
        return _log_axis(axis, values, where)
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


def key_cell(cell: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's key is the hash of: its settings, less the axes added later at their
    defaults (LATER_DEFAULTS), so that a run of plain SGD keeps the key it had before those
    axes existed, and the runs a store holds stay valid. ``num_inputs`` is left out too: the
    run's ``w`` (its whole vector) says it. An axis that does not apply to the run
    (APPLIES_ONLY: σ of a squared run) is keyed at its fixed value, so that the run has one key
    whatever the grid lists there."""
    out = {k: v for k, v in cell.items() if k != "num_inputs" and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}
    for axis, (_, _, keyed_at) in APPLIES_ONLY.items():
        if axis in out and not applies(axis, out):
            out[axis] = keyed_at
    return out


def applies(axis: str, run: Mapping[str, Any]) -> bool:
    """Whether ``axis`` applies to a run (a mapping holding its condition's axis): every axis
    but those of APPLIES_ONLY outside their condition."""
    if axis not in APPLIES_ONLY:
        return True
    condition, values, _ = APPLIES_ONLY[axis]
    return run[condition] in values


def w_vector(w: Sequence[float], num_inputs: int) -> tuple[float, ...]:
    """The true weights of runs of ``num_inputs`` features: ``w`` itself, or its one number
    repeated (d2l §3.7's w = 0.01·1)."""
    return tuple(w) if len(w) == num_inputs else tuple(w) * num_inputs


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
    lr_decay: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    average_from: int | None = None
    drop_last: bool = False
    num_inputs: int | None = None  # len(w), which it is set to when not given

    def __post_init__(self) -> None:
        if self.num_inputs is None:
            object.__setattr__(self, "num_inputs", len(self.w))
        elif self.num_inputs != len(self.w):
            raise ValueError(f"A run's num_inputs ({self.num_inputs}) must be the length of its w ({len(self.w)}).")

    @cached_property
    def key(self) -> str:
        """A stable identity (16 hex digits) of everything that defines the run, the stream
        included, the same in every process and session (see the module's docstring)."""
        cell = key_cell({f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("index", "replicate")})
        return f"{int(run_keys(cell, [self.replicate])[0]):016x}"

    @cached_property
    def seed(self) -> int:
        """The seed of this run's stream (data, start, permutations)."""
        return int(stream_seeds(vars(self), self.base_seed, [self.replicate])[0])


@dataclass(frozen=True, kw_only=True)
class Grid:
    """A grid of runs: each axis a list of values, each setting one value.

    A Grid is checked when it is made and cannot be changed after (assigning a field raises
    ``dataclasses.FrozenInstanceError``); :func:`study.run_grid` checks it again before any work,
    so that a list changed in place is refused too. ``Grid(**{**grid.to_dict(), "lr": [...]})``
    makes a changed copy.

    Parameters
    ----------
    num_train, lr, epoch, loss, sigma, reduction, batch_size, noise, noise_kind : list or dict
        The axes. A single value is taken as a one-value axis. ``epoch`` lists checkpoints.
    lr_decay, momentum, weight_decay, average_from : list
        The optimiser's axes (see study.vocabulary.OPTIMIZER_DEFAULTS): lr_t = lr·(1 + t)^−p
        after t steps (p = ``lr_decay`` >= 0; 0, the default, is a constant lr); heavy-ball
        ``momentum`` β in [0, 1) and ``weight_decay`` λ >= 0 on the weight only, as
        ``torch.optim.SGD`` applies them (d2l §3.7); ``average_from``: the epoch k from which the
        reported ŵ, b̂ are the uniform average of the iterates after every step of the epochs
        after the first k (0: Polyak-Ruppert averaging from the first step), as
        ``torch.optim.swa_utils.AveragedModel`` updated each step gives; None (``"none"`` in
        TOML, the default) reports the last iterate, as does any checkpoint up to epoch k.
    num_inputs : list of int, default: [len(w)]
        The number of features d. With more than one value, or one other than len(w), ``w`` is
        one number repeated d times (d2l §3.7's w = 0.01·1); a ``w`` of several numbers fixes
        a single d. Runs of one replicate at several d share their seed, not their data. A
        table keeps a column per feature (w_hat_j, w_err_j) for runs of d <= 10 only
        (vocabulary.PER_FEATURE_COLUMNS_UP_TO), and the norms w_err_norm and w_err_max for all.
    drop_last : list of bool, default=[False]
        Whether each epoch drops its ragged last minibatch (num_train % batch_size examples), as
        ``DataLoader(drop_last=True)``: then every step has batch_size examples (and an epoch of
        fewer examples than batch_size takes no step). It does not change the data or the order.
        A numeric axis may also be a log range, ``{"log": [lo, hi]}`` or ``{"log": [lo, hi],
        "per_decade": n}``, the TOML form (see :func:`load_grid`); it is stored as its list.
        Integer axes (num_train, batch_size, epoch) and settings (num_val, replicates, seed)
        take a float that is exactly whole (``1e3``), stored as the int.
    w : float or list of float, default=[2, -3.4]
        The true weights: a vector of num_inputs numbers, or one number for every feature.
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
    num_inputs: list[int] | None = None
    lr: list[float] = field(default_factory=lambda: [0.03])
    epoch: list[int] = field(default_factory=lambda: [3])
    loss: list[str] = field(default_factory=lambda: ["squared"])
    sigma: list[float] = field(default_factory=lambda: [1.0])
    reduction: list[str] = field(default_factory=lambda: ["mean"])
    batch_size: list[int] = field(default_factory=lambda: [32])
    noise: list[float] = field(default_factory=lambda: [0.01])
    noise_kind: list[str] = field(default_factory=lambda: ["gaussian"])
    lr_decay: list[float] = field(default_factory=lambda: [0.0])
    momentum: list[float] = field(default_factory=lambda: [0.0])
    weight_decay: list[float] = field(default_factory=lambda: [0.0])
    average_from: list[int | None] = field(default_factory=lambda: [None])
    drop_last: list[bool] = field(default_factory=lambda: [False])
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
        def put(name: str, value: Any) -> None:  # a frozen dataclass's fields are set once, here
            object.__setattr__(self, name, value)

        put("w", check_vector(self.w, "w", where))
        if self.num_inputs is None:
            put("num_inputs", [len(self.w)])
        for axis in AXES:
            put(axis, _check_axis(axis, getattr(self, axis), where))
        put("epoch", sorted(self.epoch))
        if len(self.w) > 1 and self.num_inputs != [len(self.w)]:
            fail(
                "w",
                where,
                f"one number (repeated num_inputs times) where num_inputs is {self.num_inputs}, or a "
                "list of that many numbers for a single num_inputs",
                self.w,
            )
        put("b", check_real(self.b, "b", where, low=-float("inf")))
        put("num_val", _check_whole(self.num_val, "num_val", where, low=1))
        put("replicates", _check_whole(self.replicates, "replicates", where, low=1))
        put("seed", _check_whole(self.seed, "seed", where, low=0))
        put("stream", check_choice(self.stream, "stream", where, STREAMS))
        _check_labels(self.name, self.description, where)

    def checked(self, where: str = "the Grid given to run_grid") -> Grid:
        """The grid checked again, as a new Grid: a list of it changed in place since it was made
        (``grid.loss.append("bogus")``) is refused here, before any work."""
        fields_ = {k: v for k, v in self.to_dict().items() if k not in ("name", "description")}
        return grid_from_mapping(fields_, name=self.name, description=self.description, where=where, keys_of="field")

    @property
    def max_epoch(self) -> int:
        return self.epoch[-1]

    @property
    def checkpoints(self) -> list[int]:
        """The epochs recorded: 0 (the start) and every epoch asked for."""
        return [0, *self.epoch]

    def cell_mask(self) -> np.ndarray | None:
        """Which cells of the product of RUN_AXES are runs (a boolean array of its shape), or
        None where all are: a cell whose axis does not apply (APPLIES_ONLY) is a run at that
        axis's first value only."""
        shape = tuple(len(getattr(self, a)) for a in RUN_AXES)
        mask = None

        def along(name: str, column: np.ndarray) -> np.ndarray:  # laid along its axis of the product
            at = [1] * len(shape)
            at[RUN_AXES.index(name)] = -1
            return column.reshape(at)

        for axis, (condition, values, _) in APPLIES_ONLY.items():
            if len(getattr(self, axis)) == 1:
                continue
            applying = along(condition, np.array([v in values for v in getattr(self, condition)]))
            first = along(axis, np.arange(shape[RUN_AXES.index(axis)]) == 0)
            kept = np.broadcast_to(applying | first, shape)
            mask = kept if mask is None else mask & kept
        return None if mask is None else np.ascontiguousarray(mask)

    @property
    def n_runs(self) -> int:
        """How many runs the grid holds: every cell that is a run (see :meth:`cell_mask`) times
        the replicates."""
        mask = self.cell_mask()
        cells = math.prod(len(getattr(self, a)) for a in RUN_AXES) if mask is None else int(mask.sum())
        return cells * self.replicates

    @property
    def n_rows(self) -> int:
        """How many rows its table holds: a row per run per checkpoint."""
        return self.n_runs * len(self.checkpoints)

    def w_of(self, num_inputs: int) -> tuple[float, ...]:
        """The true weights of its runs of ``num_inputs`` features (see :func:`w_vector`)."""
        return w_vector(self.w, num_inputs)

    def runs(self) -> list[Run]:
        """Every run of the grid, in grid order (axes in AXES order, replicate innermost); a run
        an axis does not apply to (APPLIES_ONLY) once, at the axis's first value."""
        mask = self.cell_mask()
        kept = None if mask is None else mask.ravel()  # the cells that are runs, in the product's order
        cells = itertools.product(*(getattr(self, a) for a in RUN_AXES), range(self.replicates))
        runs: list[Run] = []
        for i, cell in enumerate(cells):
            if kept is not None and not kept[i // self.replicates]:
                continue
            values = dict(zip(RUN_AXES, cell[:-1]))
            runs.append(
                Run(
                    **values,
                    replicate=cell[-1],
                    w=self.w_of(values["num_inputs"]),
                    b=self.b,
                    num_val=self.num_val,
                    base_seed=self.seed,
                    index=len(runs),
                    stream=self.stream,
                )
            )
        return runs

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


def grid_from_mapping(
    table: Mapping[str, Any], *, name: str, description: str = "", where: str, keys_of: str = "key"
) -> Grid:
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
        # num_inputs, where absent, is w's length (its default, None, says so). Lists are copied:
        # the grid's own, which no one else holds.
        value = table.get(f.name, None if f.name == "num_inputs" else getattr(defaults, f.name))
        object.__setattr__(grid, f.name, list(value) if isinstance(value, (list, tuple)) else value)
    object.__setattr__(grid, "name", name)
    object.__setattr__(grid, "description", description)
    grid._validate(f"{keys_of} of {where}")
    return grid


def load_grid(path: str | Path) -> Grid:
    """Read a TOML spec: optional top-level ``name`` (default: the file's stem) and
    ``description``, and a ``[grid]`` table of axes and settings. Everything is checked
    before any work starts; a bad spec raises ValueError (FileNotFoundError if missing).

    An axis is a value, a list of values, or, for a numeric axis (num_train, batch_size,
    epoch, lr, sigma, noise), a log range: ``num_train = { log = [5, 10000] }`` is
    ``log_sizes(5, 10_000)``, the 1-2-5 sequence from 5 to 10000; ``lr = { log = [1e-3, 1],
    per_decade = 2 }`` is 0.001, 0.003, 0.01, ..., 1 (see :func:`log_sizes` for
    ``per_decade``). A range holds the sequence's values between its bounds, inclusive; on an
    integer axis, the bounds are integers and so are the values. Integer keys take a float that
    is exactly whole (``num_train = [10, 1e3]``), as TOML writes no integer with an exponent.
    """
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
