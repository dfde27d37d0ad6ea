"""The analysis engine: exact statistics of results tables of any size, out of core (DuckDB).

Every number a summary, a figure or an answer shows is one SQL query over a :class:`Table`:

- a Parquet file, of which a query reads only the columns and row groups it needs;
- a CSV file, parsed once into DuckDB's own storage, its column types checked first;
- a pandas DataFrame, queried in place (no copy);
- the finished runs of a grid's store (study.store), while it runs or after it stopped.

DuckDB runs the queries: in-process, exact order statistics (``quantile_cont`` interpolates as
numpy's default and pandas' do), and a memory limit (:data:`MEMORY_LIMIT`) past which it spills
to a temporary folder. So memory stays bounded whatever the table's size, and the statistics are
the same numbers as numpy's on the same rows. Means are compensated sums (``favg``, Kahan-Babuška):
a plain parallel ``avg`` changes its last bits with the threads' order, and a summary written
twice must be the same bytes.

All SQL of the package lives here; study.summaries says what the statistics mean, study.plots
draws them.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import TableError
from .schema import ordered_categorical
from .vocabulary import APPLIES_ONLY, AXES, BOOL_AXES, CHOICES, LATER_DEFAULTS, average_text

__all__ = ["open_table", "Table", "read_results"]

#: The columns every results table has: the coordinates, and what a summary cannot do without.
#: A table written before the optimiser's axes existed lacks them: it holds their defaults.
REQUIRED = (
    *(a for a in AXES if a not in LATER_DEFAULTS and a != "num_inputs"),
    "replicate",
    "seed",
    "w_err_norm",
    "b_err",
    "diverged",
)
#: The string axes, and the order their values are listed in where no grid says otherwise.
_CANONICAL = CHOICES
#: Columns that must hold numbers (a CSV whose column holds text there is refused).
_NUMERIC = (
    *(a for a in AXES if a not in CHOICES and a not in BOOL_AXES),
    "replicate",
    "seed",
    "w_err_norm",
    "b_err",
)
#: DuckDB's working memory in one process. Past it, sorts, joins and aggregates spill to a
#: temporary folder, and statistics are computed in parts (Table._parts): with the process's own
#: 200-300 MB, a summary of any size stays under 1 GB of resident memory.
MEMORY_LIMIT = os.environ.get("STUDY_MEMORY_LIMIT", "600MB")
#: What one value costs an aggregate's state: quantile_cont keeps every value of a cell until the
#: cell is done (measured: 5M rows of 4 values each took 300-400 MB, 15-20 B a value).
_VALUE_BYTES = 20


def _budget() -> int:
    """The bytes of aggregate state one query may hold: most of MEMORY_LIMIT (the rest: the
    scan's buffers and the hash tables)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)i?B?\s*", MEMORY_LIMIT.upper())
    if match is None:
        raise ValueError(
            f"The STUDY_MEMORY_LIMIT environment variable must be a size such as 600MB or 2GB. Got {MEMORY_LIMIT!r} instead."
        )
    number, unit = match.groups()
    return int(0.75 * float(number) * 1024 ** " KMGT".index(unit or " "))


def quote(name: str) -> str:
    """A column name as an SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A Python value as an SQL literal of the same value (floats exactly, as DOUBLE)."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"CAST('{float(value)!r}' AS DOUBLE)"
    return "'" + str(value).replace("'", "''") + "'"


# --- the connection ------------------------------------------------------------------------

_LOCK = threading.RLock()
_CONNECTION: dict[str, Any] = {}
_NAMES = count()


def _connection():
    """This process's DuckDB connection (made on first use; a forked child makes its own)."""
    pid = os.getpid()
    if _CONNECTION.get("pid") != pid:
        import duckdb

        spill = tempfile.mkdtemp(prefix="study-duckdb-")
        con = duckdb.connect(
            config={"memory_limit": MEMORY_LIMIT, "temp_directory": spill, "preserve_insertion_order": False}
        )
        weakref.finalize(con, _remove_folder, spill)
        _CONNECTION.update(pid=pid, con=con)
    return _CONNECTION["con"]


def _remove_folder(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _query(sql: str) -> pd.DataFrame:
    with _LOCK:
        return _connection().execute(sql).df()


def _rows(sql: str) -> list[tuple]:
    with _LOCK:
        return _connection().execute(sql).fetchall()


# --- tables ----------------------------------------------------------------------------------


class Table:
    """A results table to analyse, and the rows chosen of it.

    Made by :func:`open_table`. Selecting rows (:meth:`select`, :meth:`filter`) gives another
    Table over the same source; nothing is read until a statistic is asked for.

    Attributes
    ----------
    name : str
        How messages name it: the file's path, or "the DataFrame".
    columns : dict
        Column name -> DuckDB type.
    spec : dict or None
        The grid that wrote it (from the Parquet file's or the CSV's sidecar metadata).
    complete : bool
        Every run of ``spec`` holds every checkpoint: the table run_grid wrote for the grid.
    chosen : dict
        Axis -> the values :meth:`select` kept.
    """

    def __init__(
        self,
        source: str,
        *,
        name: str,
        columns: Mapping[str, str],
        spec: dict | None = None,
        complete: bool = False,
        conditions: Sequence[str] = (),
        chosen: Mapping[str, list] | None = None,
        keep: Any = None,
        note: str = "",
        orders: Mapping[str, list] | None = None,
    ) -> None:
        self.source, self.name, self.columns = source, name, dict(columns)
        self.orders = dict(orders or {})  # a string axis's values in a DataFrame's order (its categories)
        self.spec, self.complete = spec, complete
        self.conditions, self.chosen = tuple(conditions), dict(chosen or {})
        self._keep = keep  # what the source needs alive: a registered DataFrame, a temporary folder
        self.note = note  # what a command says about where the rows came from (a store: how many runs)

    def _derived(self, conditions: Sequence[str], chosen: Mapping[str, list] | None = None) -> Table:
        merged = dict(self.chosen)
        for key, values in (chosen or {}).items():  # an axis chosen twice keeps the values both allow
            merged[key] = [v for v in merged[key] if any(_same(v, w) for w in values)] if key in merged else values
        return Table(
            self.source,
            name=self.name,
            columns=self.columns,
            spec=self.spec,
            complete=self.complete,
            conditions=(*self.conditions, *conditions),
            chosen=merged,
            keep=self._keep,
            note=self.note,
            orders=self.orders,
        )

    # -- rows -------------------------------------------------------------------------------

    @property
    def relation(self) -> str:
        """The chosen rows, as an SQL table expression."""
        where = f" WHERE {' AND '.join(f'({c})' for c in self.conditions)}" if self.conditions else ""
        return f"(SELECT * FROM {self.source}{where})"

    def select(self, where: Mapping[str, Any] | None = None) -> Table:
        """The rows whose value of each axis in ``where`` is the one given (or one of a list)."""
        conditions, chosen = [], {}
        for key, wanted in (where or {}).items():
            wanted = list(wanted) if isinstance(wanted, (list, tuple, set, np.ndarray)) else [wanted]
            condition = f"{quote(key)} IN ({', '.join(literal(v) for v in wanted)})" if wanted else "FALSE"
            if key in APPLIES_ONLY:  # a run the axis does not apply to is the same run at any value
                condition = f"{condition} OR {quote(key)} IS NULL"
            conditions.append(condition)
            chosen[key] = wanted
        return self._derived(conditions, chosen)

    def filter(self, condition: str) -> Table:
        """The rows where an SQL condition holds (e.g. ``"epoch > 0"``)."""
        return self._derived([condition])

    def derive(self, **columns: str) -> Table:
        """The chosen rows with columns computed by SQL expressions (``loss_sigma="..."``); a
        column of the table given again is replaced."""
        replaced = [f"{expr} AS {quote(name)}" for name, expr in columns.items() if name in self.columns]
        added = [f"{expr} AS {quote(name)}" for name, expr in columns.items() if name not in self.columns]
        star = f"* REPLACE ({', '.join(replaced)})" if replaced else "*"
        return self._rebased(f"(SELECT {', '.join([star, *added])} FROM {self.relation})")

    def union(self, *others: Table) -> Table:
        """These rows, then those of each other table (columns matched by name)."""
        parts = " UNION ALL BY NAME ".join(f"SELECT * FROM {t.relation}" for t in (self, *others))
        return self._rebased(f"({parts})")

    def _rebased(self, source: str) -> Table:
        """A table over a new source made of this one's rows: what it holds is read from it."""
        columns = dict(_rows(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {source})"))
        return Table(
            source, name=self.name, columns=columns, spec=self.spec, keep=self._keep, note=self.note, orders=self.orders
        )

    def query(self, sql: str) -> pd.DataFrame:
        """Run ``sql``, in which ``{t}`` stands for the chosen rows."""
        return _query(sql.replace("{t}", self.relation))

    def count(self) -> int:
        return int(_rows(f"SELECT count(*) FROM {self.relation}")[0][0])

    def frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The chosen rows as a DataFrame (the string axes as categoricals in the grid's order):
        for small selections only, since it holds them all in memory."""
        names = ", ".join(quote(c) for c in columns) if columns is not None else "*"
        df = self.query(f"SELECT {names} FROM {{t}}")
        return self.categorize(df)

    def categorize(self, df: pd.DataFrame) -> pd.DataFrame:
        """df with its string axes as categoricals whose categories are this table's values,
        in the grid's order."""
        for axis in _CANONICAL:
            if axis in df.columns:
                order = self._order(axis, df[axis].dropna().astype(str).unique().tolist())
                df[axis] = pd.Categorical(df[axis].astype(object), categories=order)
        return df

    # -- what the table holds -----------------------------------------------------------------

    def numeric(self, column: str) -> bool:
        kind = self.columns.get(column, "")
        return kind.split("(")[0] in {
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "HUGEINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
            "FLOAT",
            "DOUBLE",
            "DECIMAL",
        }

    def _spec_values(self, axis: str) -> list | None:
        """The values the grid gave an axis (the checkpoints for epoch), where the table is all
        of its grid's rows; None where only the rows can say."""
        if (
            not self.complete
            or self.spec is None
            or axis not in AXES
            or self._filtered_freely()
            or any(k not in AXES for k in self.chosen)
        ):
            return None
        values = [0, *self.spec["epoch"]] if axis == "epoch" else _spec_axis(self.spec, axis)
        if axis in self.chosen:
            chosen = self.chosen[axis]
            values = [v for v in values if any(_same(v, c) for c in chosen)]
        if axis in APPLIES_ONLY:  # an axis that applies to none of the rows takes no value there
            condition, applying, _ = APPLIES_ONLY[axis]
            present = self._spec_values(condition)
            if present is not None and not any(v in applying for v in present):
                return []
        return values

    def values(self, column: str) -> list:
        """The values a column takes among the chosen rows: a string axis in the grid's order,
        numbers sorted."""
        known = self._spec_values(column)
        if known is not None:
            return known if column in _CANONICAL else sorted(known)
        found = [
            r[0]
            for r in _rows(f"SELECT DISTINCT {quote(column)} FROM {self.relation} WHERE {quote(column)} IS NOT NULL")
        ]
        if column in _CANONICAL or not self.numeric(column):
            return self._order(column, [str(v) for v in found]) if column in _CANONICAL else sorted(found, key=str)
        return sorted(found)

    def _filtered_freely(self) -> bool:
        """Whether rows were chosen by a condition other than values of the axes (then only
        the rows can say what remains)."""
        return len(self.conditions) != len(self.chosen)

    def _full_order(self, axis: str) -> list[str]:
        """Every value of a string axis in order: a DataFrame's own, else its grid's, then the
        vocabulary's."""
        order = list(self.orders.get(axis) or (_spec_axis(self.spec, axis) if self.spec else ()))
        return order + [v for v in _CANONICAL.get(axis, ()) if v not in order]

    def _order(self, axis: str, present: Iterable[str]) -> list[str]:
        """The values of a string axis that are present, in order (see :meth:`_full_order`),
        then any other value sorted."""
        present = list(dict.fromkeys(present))
        order = self._full_order(axis)
        return [v for v in order if v in present] + sorted((v for v in present if v not in order), key=_natural)

    def order_by(self, column: str) -> str:
        """An SQL expression that sorts a column's values as :meth:`values` lists them."""
        if column in _CANONICAL:
            order = ", ".join(literal(v) for v in self._full_order(column))
            return (
                f"coalesce(list_position([{order}], {quote(column)}::VARCHAR), 1000), "
                f"TRY_CAST({quote(column)}::VARCHAR AS DOUBLE), {quote(column)}::VARCHAR"
            )
        return quote(column)

    def varying(self, placed: Sequence[str | None] = (), axes: Sequence[str] = AXES) -> dict[str, list]:
        """The axes (of ``axes``) that take more than one value among rows that agree on every
        column of ``placed``: what a figure or table with those columns would pool over.

        A complete table of a grid answers from the grid (an axis of one value never varies,
        and the grid's rows are its every combination); others by one DISTINCT query.
        """
        named = [c for c in dict.fromkeys(placed) if c is not None]  # placed, without None
        candidates = [a for a in axes if a not in named and a in self.columns]
        if not candidates:
            return {}
        known = {a: self._spec_values(a) for a in candidates}
        if all(v is not None for v in known.values()) and all(p in AXES for p in named):
            # every v is a list here (the check above); the test again narrows it for mypy
            return {a: self.values(a) for a, v in known.items() if v is not None and len(v) > 1}
        counts = ", ".join(f"count(DISTINCT {quote(a)}) AS {quote(a)}" for a in candidates)
        if named:
            sql = (
                f"SELECT {', '.join(f'max({quote(a)})' for a in candidates)} FROM "
                f"(SELECT {counts} FROM {self.relation} GROUP BY {', '.join(quote(p) for p in named)})"
            )
        else:
            sql = f"SELECT {counts} FROM {self.relation}"
        n = _rows(sql)[0]
        return {a: self.values(a) for a, k in zip(candidates, n) if k is not None and k > 1}

    # -- statistics ---------------------------------------------------------------------------

    def last_checkpoints(self) -> tuple[Table, list[int]]:
        """The rows at each run's last checkpoint, and the epochs those are."""
        epochs = self.values("epoch")
        if not epochs:
            return self, []
        if self.complete and not self._filtered_freely():
            return self.select({"epoch": [epochs[-1]]}), [epochs[-1]]
        runs = ", ".join(quote(a) for a in (*AXES, "replicate", "seed") if a != "epoch" and a in self.columns)
        # Runs whose checkpoints all end at the same epoch (the usual table) need no window.
        ends = [
            int(r[0])
            for r in _rows(
                f"SELECT DISTINCT last FROM (SELECT max(epoch) AS last FROM {self.relation} "
                f"GROUP BY {runs}) ORDER BY last"
            )
        ]
        if len(ends) <= 1:
            return self.select({"epoch": ends}), ends
        last = f"(SELECT * FROM {self.relation} QUALIFY epoch = max(epoch) OVER (PARTITION BY {runs}))"
        return Table(
            last,
            name=self.name,
            columns=self.columns,
            spec=self.spec,
            complete=False,
            keep=self._keep,
            note=self.note,
            orders=self.orders,
        ), ends

    def cell_stats(
        self, keys: Sequence[str], sgd: Sequence[str], ols: Sequence[str], stats: Sequence[str]
    ) -> pd.DataFrame:
        """Per cell (the distinct values of ``keys``, sorted as :meth:`values` lists them): the
        runs (``count``), how many diverged, the distinct data streams (``streams``), and each
        statistic (mean, median, q10, q90) of each metric: those of ``sgd`` over the runs that
        did not diverge, those of ``ols`` (least squares) over one row per data stream.

        A metric named ``X_abs`` is |X|. The cells come back in order, with ``metric_stat``
        columns (NaN where no run is left to describe).
        """
        quantiles = [q for q in (0.5, 0.1, 0.9) if _STAT_OF[q] in stats]
        # Each part's cells are whole: its statistics are those of the whole table's cells.
        out = self._in_parts(keys, len(sgd), lambda part: part._cell_stats(keys, sgd, ols, stats, quantiles))
        for m in (*sgd, *ols):
            if quantiles:
                lists = out.pop(m + "_q")
                for i, q in enumerate(quantiles):
                    out[f"{m}_{_STAT_OF[q]}"] = np.array([_item(v, i) for v in lists], dtype=float)
            if "mean" in stats:
                out[f"{m}_mean"] = out[f"{m}_mean"].astype(float)
        for name in ("count", "diverged", "streams"):
            out[name] = out[name].astype(np.int64)
        return self.categorize(out)

    def _cell_stats(
        self,
        keys: Sequence[str],
        sgd: Sequence[str],
        ols: Sequence[str],
        stats: Sequence[str],
        quantiles: Sequence[float],
    ) -> pd.DataFrame:
        """:meth:`cell_stats` of these rows, in two queries: SGD's statistics over the runs; the
        data streams, and least squares' statistics over one row per stream."""
        group = ", ".join(quote(k) for k in keys)
        order = ", ".join(self.order_by(k) for k in keys)

        def aggregates(metrics: Sequence[str], condition: str, expression=_metric) -> list[str]:
            parts = []
            for m in metrics:
                v = expression(m)
                where = f"{condition} AND NOT isnan({v})" if condition else f"NOT isnan({v})"
                if "mean" in stats:
                    parts.append(f"favg({v}) FILTER (WHERE {where}) AS {quote(m + '_mean')}")
                if quantiles:
                    parts.append(
                        f"quantile_cont({v}, [{', '.join(map(str, quantiles))}]) FILTER (WHERE {where}) "
                        f"AS {quote(m + '_q')}"
                    )
            return parts

        main = ", ".join(
            ["count(*) AS count", "count(*) FILTER (WHERE diverged) AS diverged", *aggregates(sgd, "NOT diverged")]
        )
        out = self.query(f"SELECT {group}, {main} FROM {{t}} GROUP BY {group} ORDER BY {order}")
        # Least squares is the same for every run on a data stream: one row per stream (and
        # their number is the cell's streams).
        firsts = "".join(f", min({_metric(m)}) AS {quote(m)}" for m in ols)
        per_stream = f"(SELECT {group}, seed{firsts} FROM {{t}} GROUP BY {group}, seed)"
        second = self.query(
            f"SELECT {', '.join([group, 'count(*) AS streams', *aggregates(ols, '', quote)])} "
            f"FROM {per_stream} GROUP BY {group} ORDER BY {order}"
        )
        return pd.concat([out, second.drop(columns=list(keys))], axis=1)

    def _parts(self, keys: Sequence[str], values: int) -> list[Table]:
        """These rows cut into parts of whole cells (by a hash of ``keys``), so that the states
        of aggregates that keep ``values`` values a row (exact quantiles keep every value of a
        cell) fit DuckDB's memory: one part for a table that fits, more for a larger one."""
        need = self.count() * values * _VALUE_BYTES
        budget = _budget()
        if not keys or need <= budget:
            return [self]
        n = math.ceil(1.5 * need / budget)  # a half more: a hash spreads cells unevenly
        hashed = f"hash({', '.join(quote(k) for k in keys)}) % {n}"
        return [self.filter(f"{hashed} = {i}") for i in range(n)]

    def _in_parts(self, keys: Sequence[str], values: int, run, then: Sequence[str] = ()) -> pd.DataFrame:
        """``run(part)`` for each of :meth:`_parts`, its rows together, sorted by ``keys`` (as
        :meth:`order_by` sorts them), then by ``then``."""
        frames = [run(part) for part in self._parts(keys, values)]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return self._sorted(df, [*keys, *then])

    def _sorted(self, df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
        """Rows (cells from several parts) in the order :meth:`order_by` gives."""
        if len(df) < 2 or not keys:
            return df
        ranks = {}
        for k in keys:
            if k in _CANONICAL:
                position = {v: i for i, v in enumerate(self._full_order(k))}
                ranks[f"_rank_{k}"] = df[k].astype(object).map(lambda v, position=position: position.get(str(v), 1000))
            ranks[f"_value_{k}"] = df[k].astype(object).map(lambda v: _natural(str(v))) if k in _CANONICAL else df[k]
        ordered = df.assign(**ranks).sort_values(list(ranks), kind="stable")
        return ordered.drop(columns=list(ranks)).reset_index(drop=True)

    def unit_moments(
        self,
        keys: Sequence[str],
        estimands: Sequence[str],
        paired: Mapping[str, str],
        ranks: Any,
        *,
        per_stream: bool,
        units: int | None = None,
    ) -> pd.DataFrame:
        """The sums Monte Carlo standard errors are made of, per cell, over its independent
        units: the data streams with a run that did not diverge. With ``per_stream``, a
        stream's runs in a cell (a cell that pools over lr, say) are averaged into one unit
        first; otherwise each run that did not diverge is its stream's one unit.

        For each estimand ``E`` (the i-th): ``n`` (units), ``sx{i}``, ``sxx{i}``, ``syy{i}``: the
        compensated sums of the units' E, E² and E⁴ (y = E²); for each estimand in ``paired``
        (E -> its least-squares column on the same data), ``so{i}``, ``soo{i}``, ``syo{i}``: the
        sums of the least-squares error squared (o), o², and y·o. Means and sums of squares
        about them follow (study.summaries.precision_columns); compensated sums keep them exact
        to about 1e-16 of the sums, and the same bits whatever the threads.

        ``ranks(n)`` gives the 1-based ranks (lo, hi) of a median's interval among n units, or
        None: ``med{i}``, ``lo{i}`` and ``hi{i}`` are the median of the units' |E| and those
        order statistics. The ranks depend on n, which a query must know before it runs:
        ``units`` is the n every cell is expected to have (one query then does all); cells
        that have another are done again, one query for each n they have.
        """
        group = ", ".join(quote(k) for k in keys)
        if per_stream:
            unit = [
                f"favg({_metric(e)}) AS x{i}, favg({_metric(e)} * {_metric(e)}) AS y{i}"
                for i, e in enumerate(estimands)
            ]
            unit += [f"min({_metric(o)} * {_metric(o)}) AS o{estimands.index(e)}" for e, o in paired.items()]
            source = f"(SELECT {group}, seed, {', '.join(unit)} FROM {{t}} WHERE NOT diverged GROUP BY {group}, seed)"
        else:
            unit = [f"{_metric(e)} AS x{i}, {_metric(e)} * {_metric(e)} AS y{i}" for i, e in enumerate(estimands)]
            unit += [f"{_metric(o)} * {_metric(o)} AS o{estimands.index(e)}" for e, o in paired.items()]
            source = f"(SELECT {group}, {', '.join(unit)} FROM {{t}} WHERE NOT diverged)"
        indices, pairs = range(len(estimands)), [estimands.index(e) for e in paired]
        sums = [
            f"fsum(x{i}) AS sx{i}, fsum(y{i}) AS sy{i}, fsum(x{i} * x{i}) AS sxx{i}, fsum(y{i} * y{i}) AS syy{i}"
            for i in indices
        ]
        sums += [f"fsum(o{i}) AS so{i}, fsum(o{i} * o{i}) AS soo{i}, fsum(y{i} * o{i}) AS syo{i}" for i in pairs]

        def moments(part: Table) -> pd.DataFrame:
            return part.ranked(source, keys, [f"abs(x{i})" for i in indices], ranks, units, extra=sums)

        return self.categorize(self._in_parts(keys, len(estimands), moments))

    def ranked(
        self,
        source: str,
        group: Sequence[str],
        values: Sequence[str],
        ranks: Any,
        expected: int | None = None,
        extra: Sequence[str] = (),
    ) -> pd.DataFrame:
        """Per group of ``source`` (SQL, ``{t}`` the chosen rows): ``n``, the ``extra``
        aggregates, and for the i-th of ``values`` (SQL expressions) its median ``med{i}`` and
        the order statistics at the ranks ``ranks(n)`` gives, an interval's ``lo{i}`` and
        ``hi{i}`` (NaN where it gives None). The ranks depend on n, which a query must know
        before it runs: one query does the groups of ``expected`` rows, then one query each
        other n that groups have."""
        cols = ", ".join(quote(g) for g in group)
        indices = range(len(values))

        def picks(n: int) -> str:
            return ", ".join(f"{_order_statistic_sql(v, n, ranks)} AS ci{i}" for i, v in enumerate(values))

        first = self.query(
            f"SELECT {', '.join([cols, 'count(*) AS n', *extra])}, {picks(expected or 1)} FROM {source} GROUP BY {cols}"
        )
        _order_statistics(first, indices, ranks, ok=first["n"] == (expected or 1))
        for n in sorted(set(first.loc[first["n"] != (expected or 1), "n"].astype(int))):
            again = self.query(
                f"SELECT {cols}, count(*) AS n, {picks(n)} FROM {source} GROUP BY {cols} HAVING count(*) = {n}"
            )
            _order_statistics(again, indices, ranks)
            cells = (first["n"] == n).to_numpy()
            found = first.loc[cells, list(group)].merge(again, on=list(group), how="left")
            for column in (f"{c}{i}" for c in ("med", "lo", "hi") for i in indices):
                first.loc[cells, column] = found[column].to_numpy(dtype=float)
        return first

    def comparison(
        self, keys: Sequence[str], factor: str, baseline: Any, metric: str, ranks: Any, *, paired: bool, blocks: int
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """What a comparison of the levels of ``factor`` with ``baseline`` is made of, per cell
        (``keys``) and level (``level``); |metric| is each run's error, +inf for a run that
        diverged (it loses to any run that did not).

        Paired (runs of one data stream, one at each level): per (cell, level) the paired ratio
        r = error / baseline's error of each stream (1 where they are equal, diverged ones
        included), its ``n``, ``med``, ``lo``, ``hi`` (:meth:`ranked`) and ``wins`` (the share of
        streams where the level's error is smaller; ties count a half). Unpaired: the same of
        each level's own errors, the baseline's among them. The second frame holds, per cell,
        level and block of streams (a hash of the seed, ``blocks`` of them), the sums of the
        squared errors ``sv`` (and the baseline's paired ``sb``): a bootstrap resamples them.
        """
        cols = ", ".join(quote(k) for k in keys)
        m = _metric(metric + "_abs")
        gone = "coalesce(diverged, FALSE)" if "diverged" in self.columns else "FALSE"
        errors = (
            f"(SELECT {cols}, seed, {quote(factor)} AS level, CASE WHEN {gone} OR NOT isfinite({m}) "
            f"THEN 'inf'::DOUBLE ELSE {m} END AS v FROM {{t}})"
        )
        base = literal(baseline)
        if not paired:
            units = self.query(f"SELECT {cols}, level, count(*) AS n FROM {errors} GROUP BY {cols}, level")
            common = set(units["n"].astype(int))
            stats = self.ranked(errors, [*keys, "level"], ["v"], ranks, common.pop() if len(common) == 1 else None)
            sums = self.query(
                f"SELECT {cols}, level, hash(seed) % {blocks} AS block, fsum(v * v) AS sv, "
                f"count(*) AS k FROM {errors} GROUP BY {cols}, level, block"
            )
            return stats, sums
        # A key the baseline's runs lack (an axis that does not apply to them, APPLIES_ONLY: σ of
        # the squared loss) pairs them with the runs of every value of it.
        on = " AND ".join(
            ["e.seed = b.seed"]
            + [
                f"(e.{quote(k)} IS NOT DISTINCT FROM b.{quote(k)}"
                + (f" OR b.{quote(k)} IS NULL)" if k in APPLIES_ONLY else ")")
                for k in keys
            ]
        )
        pairs = (
            f"(SELECT {', '.join(f'e.{quote(k)}' for k in keys)}, e.seed, e.level, e.v, b.v AS b, "
            f"CASE WHEN e.v = b.v THEN 1.0 WHEN b.v = 0 THEN 'inf'::DOUBLE ELSE e.v / b.v END AS r "
            f"FROM {errors} e JOIN (SELECT {cols}, seed, v FROM {errors} WHERE level = {base}) b "
            f"ON {on} WHERE e.level <> {base})"
        )
        counts = self.query(f"SELECT {cols}, level, count(*) AS n FROM {pairs} GROUP BY {cols}, level")
        common = set(counts["n"].astype(int))
        wins = "avg(CASE WHEN v < b THEN 1.0 WHEN v = b THEN 0.5 ELSE 0.0 END) AS wins"
        stats = self.ranked(
            pairs, [*keys, "level"], ["r"], ranks, common.pop() if len(common) == 1 else None, extra=[wins]
        )
        sums = self.query(
            f"SELECT {cols}, level, hash(seed) % {blocks} AS block, fsum(v * v) AS sv, "
            f"fsum(b * b) AS sb FROM {pairs} GROUP BY {cols}, level, block"
        )
        return stats, sums

    def diverged_first(self, keys: Sequence[str]) -> pd.DataFrame:
        """The runs that diverged, one row each: ``keys`` and the first checkpoint at which it
        had diverged (``diverged_at``), in the grid's order."""
        group = ", ".join(quote(k) for k in keys)
        order = ", ".join(self.order_by(k) for k in keys)
        out = self.query(
            f"SELECT {group}, min(epoch) AS diverged_at FROM {{t}} WHERE diverged GROUP BY {group} ORDER BY {order}"
        )
        out["diverged_at"] = out["diverged_at"].astype(np.int64)
        return self.categorize(out)

    def _shown(
        self, keys: Sequence[str], column: str, *, off_axis: str | None, diverged: bool, per_stream: bool
    ) -> str:
        """The rows behind the points of a figure, as SQL: the key columns, ``seed``, ``v`` =
        |column|, and why a row is left out of a log axis: ``gone`` (diverged, where
        ``diverged``), ``off`` (``off_axis`` <= 0), ``zero``, ``other`` (not finite), else ``keep``.
        ``per_stream``: one row per data stream and point (least squares)."""
        select = "".join(f"{quote(k)}, " for k in keys)
        seed = "seed" in self.columns
        if per_stream and seed:
            base = (
                f"SELECT {select}seed, min(abs({quote(column)}::DOUBLE)) AS v, FALSE AS gone FROM {{t}} "
                f"GROUP BY {select}seed"
            )
        else:
            gone = "coalesce(diverged, FALSE)" if diverged and "diverged" in self.columns else "FALSE"
            base = (
                f"SELECT {select}{'seed' if seed else 'NULL AS seed'}, abs({quote(column)}::DOUBLE) AS v, "
                f"{gone} AS gone FROM {{t}}"
            )
        off = f"NOT gone AND {quote(off_axis)} <= 0" if off_axis else "FALSE"
        return (
            f"(SELECT *, NOT gone AND NOT off AND v = 0 AS zero, "
            f"NOT gone AND NOT off AND NOT (v = 0) AND NOT isfinite(v) AS other, "
            f"NOT gone AND NOT off AND NOT (v = 0) AND isfinite(v) AS keep "
            f"FROM (SELECT *, {off} AS off FROM ({base})))"
        )

    def point_stats(
        self,
        keys: Sequence[str],
        column: str,
        *,
        off_axis: str | None = None,
        diverged: bool = True,
        per_stream: bool = False,
        ranks: Any = None,
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        """A figure's points: per distinct ``keys`` (sorted as :meth:`values` lists them) the
        rows (``total``: runs, or data streams with ``per_stream``), those shown (``kept``), and
        the median, 10% and 90% quantiles, minimum and maximum of |column| over the shown ones;
        and the counts of rows left out, and why (see :meth:`_shown`). With ``ranks`` (see
        :meth:`ranked`), also the median's interval, ``ci_lo`` and ``ci_hi``: the order
        statistics of the shown rows at those ranks (NaN where there are too few)."""
        select, group = _grouping(keys, self.order_by)

        def part_points(part: Table) -> pd.DataFrame:
            shown = part._shown(keys, column, off_axis=off_axis, diverged=diverged, per_stream=per_stream)
            return part.query(
                f"SELECT {select}count(*) AS total, count(*) FILTER (WHERE keep) AS kept, "
                f"quantile_cont(v, [0.5, 0.1, 0.9]) FILTER (WHERE keep) AS q, min(v) FILTER (WHERE keep) AS low, "
                f"max(v) FILTER (WHERE keep) AS high FROM {shown}{group}"
            )

        points = self._in_parts(keys, 1, part_points)
        if ranks is not None and keys:

            def part_interval(part: Table) -> pd.DataFrame:
                rows = part._shown(keys, column, off_axis=off_axis, diverged=diverged, per_stream=per_stream)
                kept = points["kept"]
                common = set(kept[kept > 0].astype(int))
                return part.ranked(
                    f"(SELECT * FROM {rows} WHERE keep)", keys, ["v"], ranks, common.pop() if len(common) == 1 else None
                )

            interval = self._in_parts(keys, 1, part_interval)[[*keys, "lo0", "hi0"]]
            points = points.merge(interval.rename(columns={"lo0": "ci_lo", "hi0": "ci_hi"}), on=list(keys), how="left")
        shown = self._shown(keys, column, off_axis=off_axis, diverged=diverged, per_stream=per_stream)
        q = points.pop("q")
        for i, name in enumerate(("median", "lo", "hi")):
            points[name] = np.array([_item(v, i) for v in q], dtype=float)
        for name in ("total", "kept"):
            points[name] = points[name].astype(np.int64)
        off_nonzero = f"count(*) FILTER (WHERE off AND {quote(off_axis)} <> 0)" if off_axis else "0"
        counts = self.query(
            f"SELECT count(*) AS rows, count(*) FILTER (WHERE gone) AS diverged, "
            f"count(*) FILTER (WHERE off) AS off_axis, {off_nonzero} AS off_nonzero, "
            f"count(*) FILTER (WHERE zero) AS zero, count(*) FILTER (WHERE other) AS other "
            f"FROM {shown}"
        ).iloc[0]
        return self.categorize(points), {k: int(v) for k, v in counts.items()}

    def stream_values(
        self,
        keys: Sequence[str],
        column: str,
        *,
        off_axis: str | None = None,
        diverged: bool = True,
        per_stream: bool = False,
    ) -> pd.DataFrame:
        """One value per data stream and ``keys``: the median |column| of its shown rows (as
        :meth:`point_stats` shows them), with its ``seed``: the independent units a fit
        resamples. Without a ``seed`` column, every shown row is a unit."""
        select = "".join(f"{quote(k)}, " for k in keys)
        shown = self._shown(keys, column, off_axis=off_axis, diverged=diverged, per_stream=per_stream)
        if "seed" not in self.columns:
            return self.query(f"SELECT {select}v FROM {shown} WHERE keep")

        def part_values(part: Table) -> pd.DataFrame:
            rows = part._shown(keys, column, off_axis=off_axis, diverged=diverged, per_stream=per_stream)
            return part.query(f"SELECT {select}seed, median(v) AS v FROM {rows} WHERE keep GROUP BY {select}seed")

        return self._in_parts(keys, 1, part_values, then=["seed"])

    def lr_epoch_cells(self, value: str, panels: Sequence[str] = ()) -> pd.DataFrame:
        """A heatmap's cells: per (panels, lr, epoch > 0), the median |value| of the runs that did
        not diverge, the share and the count of those that did."""
        keys = (*panels, "lr", "epoch")
        group = ", ".join(quote(k) for k in keys)
        return self.categorize(
            self._in_parts(
                keys,
                1,
                lambda part: part.query(
                    f"SELECT {group}, median(abs({quote(value)}::DOUBLE)) FILTER (WHERE NOT diverged) AS median, "
                    f"avg(diverged::DOUBLE) AS share, count(*) FILTER (WHERE diverged) AS diverged "
                    f"FROM {{t}} WHERE epoch > 0 GROUP BY {group}"
                ),
            )
        )

    def runs(self) -> int:
        """The distinct runs among the chosen rows."""
        runs = [a for a in (*AXES, "replicate", "seed") if a != "epoch" and a in self.columns]
        return int(
            _rows(f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(quote(a) for a in runs)} FROM {self.relation})")[
                0
            ][0]
        )


_STAT_OF = {0.5: "median", 0.1: "q10", 0.9: "q90"}


def _order_statistic_sql(value: str, n: int, ranks: Any) -> str:
    """One sorted state for n values: the order statistics at the interval's ranks (``ranks(n)``)
    and the middle one or two, as a list (see _order_statistics). quantile_disc(q) gives
    X_(ceil(n q)), so q = (rank - 1/2)/n picks the rank, free of rounding."""
    at = ranks(n) or (1, n)
    wanted = [at[0], (n + 1) // 2, n // 2 + 1, at[1]]
    return f"quantile_disc({value}, [{', '.join(repr((r - 0.5) / max(n, 1)) for r in wanted)}])"


def _order_statistics(df: pd.DataFrame, indices: Iterable[int], ranks: Any, ok: Any = True) -> None:
    """Unpack Table.unit_moments' ``ci{i}`` lists (the order statistics at the interval's low
    rank, the middle one or two, the high rank) into ``lo{i}``, ``med{i}`` and ``hi{i}``: NaN
    where the rows' n was not the one the query's ranks were for (``ok`` False), and for the
    interval where n is too small for one."""
    counts = df["n"].to_numpy(dtype=int)
    ok = np.broadcast_to(np.asarray(ok, dtype=bool), (len(df),))
    interval = np.array([ranks(n) is not None for n in counts], dtype=bool)
    for i in indices:
        picked = np.array(
            [[_item(v, j) for j in range(4)] if good else [np.nan] * 4 for v, good in zip(df.pop(f"ci{i}"), ok)],
            dtype=float,
        ).reshape(len(df), 4)
        df[f"med{i}"] = (picked[:, 1] + picked[:, 2]) / 2
        df[f"lo{i}"] = np.where(interval, picked[:, 0], np.nan)
        df[f"hi{i}"] = np.where(interval, picked[:, 3], np.nan)


def _grouping(keys: Sequence[str], order_by) -> tuple[str, str]:
    """The select list's start and the GROUP BY ... ORDER BY clause of a query per ``keys``
    (none: one row over all)."""
    if not keys:
        return "", ""
    group = ", ".join(quote(k) for k in keys)
    return f"{group}, ", f" GROUP BY {group} ORDER BY {', '.join(order_by(k) for k in keys)}"


def _item(values: Any, i: int) -> float:
    """The i-th of a list DuckDB gave back, or NaN where it gave none (no rows)."""
    if values is None or values is pd.NA or (isinstance(values, float) and np.isnan(values)):
        return np.nan
    return float(values[i])


def _metric(name: str) -> str:
    """A metric as an SQL expression: ``X_abs`` is |X|, as DOUBLE."""
    if name.endswith("_abs"):
        return f"abs({quote(name[: -len('_abs')])}::DOUBLE)"
    return f"{quote(name)}::DOUBLE"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float, np.integer, np.floating)) and isinstance(b, (int, float, np.integer, np.floating)):
        return float(a) == float(b)
    return str(a) == str(b)


# --- opening a table -------------------------------------------------------------------------


def open_table(table: Any, *, required: Sequence[str] = REQUIRED) -> Table:
    """A :class:`Table` over a DataFrame, a Parquet or CSV file (by its extension), or a Table.

    A file is checked before any statistic: it must open as its format, hold the schema's
    ``required`` columns, and hold numbers where numbers belong; anything else is a
    :class:`TableError` that says what was found. A DataFrame is taken as it is.
    """
    if isinstance(table, Table):
        return table
    if isinstance(table, pd.DataFrame):
        return _from_frame(table)
    if not isinstance(table, (str, os.PathLike)):
        raise TypeError(f"A results table is a DataFrame or the path of a .csv or .parquet file; got {table!r}.")
    path = Path(table)
    store = path.with_name(path.name + ".store")
    described = store / "grid.json"
    if described.is_file() and (not path.is_file() or described.stat().st_mtime > path.stat().st_mtime):
        found = _from_store(path, store, required)
        if found is not None:
            return found
    if not path.is_file():
        raise FileNotFoundError(f"No results file at {str(path)!r}.")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _from_parquet(path, required)
    if suffix == ".csv":
        return _from_csv(path, required)
    raise TableError(
        f"{str(path)!r} is not a results table: a results table is a .csv or .parquet file "
        f"(got {suffix or 'no extension'})."
    )


def _from_store(path: Path, folder: Path, required: Sequence[str]) -> Table | None:
    """The finished runs of the grid a store is being filled for (a grid still running, or
    stopped), as a table, when they are fresher than the table at ``path`` (or it is not
    there): written once, block by block, to a temporary Parquet file that lives as long as
    the Table. Damaged files in the store are said (a warning each), and their runs left out."""
    import warnings

    from .store import held_table

    scratch = tempfile.TemporaryDirectory(prefix="study-held-")
    held = held_table(folder, Path(scratch.name) / "held.parquet")
    if held is None:
        scratch.cleanup()
        return None
    for damage in held.damaged:
        warnings.warn(f"{damage}; they are left out of this table", stacklevel=3)
    if held.runs == 0:
        scratch.cleanup()
        raise TableError(
            f"{str(path)!r} has no finished runs yet: its store {str(folder)!r} holds none of the "
            f"{held.total:,} runs of the grid {held.name!r}."
        )
    table = _from_parquet(held.path, required)
    running = _running(path)
    state = (
        ("the grid is still running" if running else "the grid was stopped before it finished")
        if held.runs < held.total
        else "every run, the table itself not yet written"
    )
    note = f"{held.runs:,} of {held.total:,} runs, read from {folder} ({state})"
    return Table(
        table.source,
        name=str(path),
        columns=table.columns,
        spec=table.spec,
        complete=held.runs == held.total,
        keep=scratch,
        note=note,
    )


def _running(path: Path) -> bool:
    """Whether a study run holds the output's lock (its pid, in the lock file, is alive)."""
    try:
        pid = int(path.with_name(f".{path.name}.lock").read_text().split()[0])
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, ValueError, IndexError):
        return False
    return True


def _from_frame(df: pd.DataFrame) -> Table:
    name = f"study_frame_{next(_NAMES)}"
    with _LOCK:
        con = _connection()
        con.register(name, df)
        columns = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {name})").fetchall())
    holder = _Registered(name)
    source, columns = _with_later_axes(name, columns)
    orders = {}
    for axis in _CANONICAL:  # as a DataFrame run_grid gave lists them: its categories, else as they come
        if axis in df.columns:
            column = df[axis]
            values = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else pd.unique(column)
            orders[axis] = [str(v) for v in values]
    return Table(source, name="the DataFrame", columns=columns, keep=(df, holder), orders=orders)


class _Registered:
    """Unregisters a DataFrame from the connection when the last Table over it goes."""

    def __init__(self, name: str) -> None:
        weakref.finalize(self, _release, name, os.getpid(), "unregister")


class _Dropped:
    """Drops a temporary table (a CSV parsed once) when the last Table over it goes."""

    def __init__(self, name: str) -> None:
        weakref.finalize(self, _release, name, os.getpid(), "drop")


def _release(name: str, pid: int, how: str) -> None:
    if _CONNECTION.get("pid") == pid:
        with _LOCK:
            try:
                con = _CONNECTION["con"]
                con.unregister(name) if how == "unregister" else con.execute(f"DROP TABLE IF EXISTS {name}")
            except Exception:  # at interpreter exit the connection may be gone first
                pass


def _checked_columns(path: Path, kind: str, source: str, required: Sequence[str]) -> dict[str, str]:
    import duckdb

    try:
        columns = dict(_rows(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {source})"))
    except (duckdb.Error, OSError) as err:
        raise TableError(f"{str(path)!r} is not a readable {kind} file: {_first_line(err)}") from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise TableError(
            f"{str(path)!r} is not a results table: the {kind} file lacks the columns {', '.join(missing)}."
        )
    return columns


def _spec_axis(spec: Mapping[str, Any], axis: str) -> list:
    """An axis's values in a grid's spec, as a table holds them: average_from as text, and an
    axis added after the spec was written (LATER_DEFAULTS) at its default."""
    if axis == "num_inputs" and spec.get(axis) is None:
        return [len(spec["w"])] if "w" in spec else []
    values = list(spec[axis]) if axis in spec else [LATER_DEFAULTS[axis]] if axis in LATER_DEFAULTS else []
    return [average_text(v) for v in values] if axis == "average_from" else values


def _with_later_axes(source: str, columns: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The source with the axes added later that it lacks (a table from before them: plain SGD,
    their defaults, and num_inputs its number of w_hat_j columns), and average_from as text
    however a CSV's values read ("2" as a number)."""
    missing = {a: d for a, d in LATER_DEFAULTS.items() if a not in columns}
    cast = "average_from" in columns and columns["average_from"] != "VARCHAR"
    features = [] if "num_inputs" in columns else [c for c in columns if re.fullmatch(r"w_hat_\d+", c)]
    if features:  # a table from before num_inputs: each run had a column per feature
        missing["num_inputs"] = len(features)
    if not missing and not cast:
        return source, dict(columns)
    star = "* REPLACE (average_from::VARCHAR AS average_from)" if cast else "*"
    types = {
        a: "VARCHAR" if a == "average_from" else "BOOLEAN" if isinstance(d, bool) else "DOUBLE"
        for a, d in LATER_DEFAULTS.items()
    }
    types["num_inputs"] = "BIGINT"
    added = [
        f"{literal(average_text(d)) if a == 'average_from' else f'{str(d).upper()}::{types[a]}'} AS {quote(a)}"
        for a, d in missing.items()
    ]
    out = dict(columns)
    out.update({a: types[a] for a in (*missing, *(["average_from"] if cast else []))})
    return f"(SELECT {', '.join([star, *added])} FROM {source})", out


def _natural(value: str) -> tuple:
    """Numbers in their order, before words: "2" < "10" < "x"."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _first_line(err: BaseException) -> str:
    return " ".join(str(err).split("\n")[0].split())


def _from_parquet(path: Path, required: Sequence[str]) -> Table:
    import pyarrow.parquet as pq

    try:  # the footer: a truncated or damaged file is refused here, with pyarrow's reason
        meta = pq.read_schema(path).metadata or {}
    except Exception as err:
        raise TableError(f"{str(path)!r} is not a readable Parquet file: {_first_line(err)}") from None
    source = f"read_parquet({literal(str(path))})"
    columns = _checked_columns(path, "Parquet", source, required)
    source, columns = _with_later_axes(source, columns)
    study = json.loads(meta[b"study"]) if b"study" in meta else {}
    spec = study.get("spec")
    return Table(
        source,
        name=str(path),
        columns=columns,
        spec=spec,
        complete=spec is not None and not study.get("partial", False),
    )


def _from_csv(path: Path, required: Sequence[str]) -> Table:
    source = f"read_csv({literal(str(path))}, header = true, sample_size = -1)"
    columns = _checked_columns(path, "CSV", source, required)
    table = Table(source, name=str(path), columns=columns)
    empty = []  # numeric columns with no value at all (σ of squared runs alone): no type to infer
    for column in _NUMERIC:
        if column in columns and not table.numeric(column):
            if table.count() == 0:  # a header alone: no types to infer
                raise TableError(f"{str(path)!r} holds no runs: the CSV file has its header and no rows.")
            bad = _rows(
                f"SELECT {quote(column)} FROM {source} WHERE TRY_CAST({quote(column)} AS DOUBLE) IS NULL "
                f"AND {quote(column)} IS NOT NULL LIMIT 1"
            )
            if not bad and not _rows(f"SELECT 1 FROM {source} WHERE {quote(column)} IS NOT NULL LIMIT 1"):
                empty.append(column)
                continue
            found = repr(bad[0][0]) if bad else f"values of type {columns[column]}"
            raise TableError(
                f"{str(path)!r} is not a results table: its column {column} must hold numbers, but holds {found}."
            )
    if empty:
        source = f"(SELECT * REPLACE ({', '.join(f'{quote(c)}::DOUBLE AS {quote(c)}' for c in empty)}) FROM {source})"
        columns.update({c: "DOUBLE" for c in empty})
    source, columns = _with_later_axes(source, columns)
    sidecar = path.with_name(path.stem + ".meta.json")
    spec, complete = None, False
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
            spec, complete = meta.get("spec"), not meta.get("partial", False) and "spec" in meta
        except (OSError, ValueError):
            pass
    if spec is not None and complete and _stale(path, sidecar):
        complete = False  # the sidecar of another write: its grid may not be this table's
    # Parsed once into DuckDB's own columnar storage (which spills past MEMORY_LIMIT): a CSV
    # read again for each query cost 50 ms a query on an exercise's 3 MB table.
    name = f"study_csv_{next(_NAMES)}"
    with _LOCK:
        _connection().execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {source}")
    return Table(name, name=str(path), columns=columns, spec=spec, complete=complete, keep=_Dropped(name))


def _stale(table: Path, sidecar: Path) -> bool:
    """A sidecar written before its table was (the table replaced since, by hand)."""
    return sidecar.stat().st_mtime + 60 < table.stat().st_mtime


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a whole results table into memory, CSV or Parquet by extension, once it passed the
    checks of :func:`open_table` (its format, columns and types). For tables of
    any size, give the path itself to :func:`summarize`, :func:`diverged_runs` or the figures:
    they read only what they need."""
    path = Path(path)
    open_table(path)
    df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    for axis in CHOICES:  # as run_grid gives them
        df[axis] = ordered_categorical(df[axis])
    return df
