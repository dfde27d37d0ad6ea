"""The analysis engine (study.analysis): its statistics against pandas' and numpy's on the same
rows, the same bytes twice, every source alike, refusals that say what was found, and the
finished runs of a store read while its grid is unfinished."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from study import analysis
from study.analysis import open_table
from study.errors import TableError
from study.grid import Grid
from study.runner import run_grid
from study.schema import write_table
from study.selection import LEAST_SQUARES
from study.summaries import ERROR_METRICS, diverged_runs, summarize

GRID = Grid(
    num_train=[10, 20, 40],
    lr=[0.03, 0.3, 3.0],
    loss=["huber", "squared"],
    epoch=[1, 2],
    replicates=6,
    num_val=20,
    name="mix",
)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The same grid as a DataFrame, a CSV and a Parquet file written by run_grid."""
    folder = tmp_path_factory.mktemp("tables")
    df = run_grid(GRID, out=folder / "mix.csv", n_jobs=1, progress=False)
    run_grid(GRID, out=folder / "mix.parquet", n_jobs=1, progress=False)
    return {"frame": df, "csv": folder / "mix.csv", "parquet": folder / "mix.parquet"}


def _reference(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """summarize's statistics by pandas and numpy: SGD's over the runs that did not diverge,
    least squares over the first row of each data stream of a cell."""
    df = df.assign(b_err_abs=df["b_err"].abs(), ols_b_err_abs=df["ols_b_err"].abs())
    out = []
    for cell, rows in df.groupby(keys, observed=True, sort=True):
        row = dict(zip(keys, cell if isinstance(cell, tuple) else (cell,)))
        row.update(count=len(rows), diverged=int(rows["diverged"].sum()), streams=rows["seed"].nunique())
        ok, first = rows[~rows["diverged"]], rows.drop_duplicates("seed")
        for metric in ERROR_METRICS:
            values = (first if metric in LEAST_SQUARES else ok)[metric].to_numpy(dtype=float)
            stats = [values.mean(), *np.percentile(values, [50, 10, 90])] if len(values) else [np.nan] * 4
            row.update({f"{metric}_{s}": v for s, v in zip(("mean", "median", "q10", "q90"), stats)})
        out.append(row)
    return pd.DataFrame(out)


@pytest.mark.parametrize("source", ["frame", "csv", "parquet"])
def test_summarize_equals_pandas_and_numpy_on_every_source(files, source):
    df = files["frame"]
    assert df["diverged"].any() and not df["diverged"].all()  # lr 3 diverges: counted, left out
    for by, epoch in ((["num_train", "lr", "loss"], 2), (["lr", "epoch"], None), (["loss"], 1)):
        got = summarize(files[source], by=by, epoch=epoch)
        rows = df if epoch is None else df[df["epoch"] == epoch]
        keys = by if "epoch" in by else [*by, "epoch"]
        expected = _reference(rows, keys)
        assert list(got.columns[: len(keys)]) == keys
        for column in expected.columns:
            if column in keys:
                assert got[column].astype(object).tolist() == expected[column].astype(object).tolist()
            else:
                np.testing.assert_allclose(
                    got[column].to_numpy(dtype=float),
                    expected[column].to_numpy(dtype=float),
                    rtol=1e-12,
                    atol=0,
                    equal_nan=True,
                    err_msg=f"{source} {by} {column}",
                )
    # The string axes in the grid's order (huber first here), from every source.
    assert summarize(files[source], by="loss")["loss"].tolist() == ["huber", "squared"]


def test_summary_files_are_the_same_bytes_whatever_the_threads(files, tmp_path):
    con = analysis._connection()
    written = []
    try:
        for threads in (1, 2, 3, 1):
            con.execute(f"SET threads = {threads}")
            path = tmp_path / f"s{len(written)}.csv"
            write_table(summarize(files["parquet"], by=["num_train", "lr", "loss", "epoch"]), path)
            written.append(path.read_bytes())
    finally:
        con.execute("RESET threads")
    assert len(set(written)) == 1


def test_diverged_runs_lists_each_run_once_at_its_first_diverged_checkpoint(files):
    df = files["frame"]
    listed = diverged_runs(files["parquet"])
    hit = df[df["diverged"]]
    assert len(listed) == hit.groupby(["num_train", "lr", "loss", "replicate"], observed=True).ngroups > 0
    first = hit.groupby("seed")["epoch"].min()
    assert (listed["diverged_at"].to_numpy() == first.loc[listed["seed"]].to_numpy()).all()
    assert len(diverged_runs(files["csv"], epoch=1)) <= len(listed)


def test_varying_axes_from_the_grid_equal_those_of_a_distinct_query(files):
    from_grid = open_table(files["parquet"])
    assert from_grid.complete and from_grid.spec["name"] == "mix"
    from_rows = open_table(files["frame"])
    for placed in ((), ("lr",), ("num_train", "lr", "loss", "epoch"), ("loss", "epoch")):
        assert from_grid.varying(placed) == from_rows.varying(placed)
    chosen = from_grid.select({"lr": [0.03], "loss": ["squared"]})
    assert chosen.varying(("num_train",)) == {"epoch": [0, 1, 2]}
    assert chosen.values("lr") == [0.03] and chosen.count() == 3 * 6 * 3


def test_point_stats_are_numpys_median_and_percentiles_of_the_shown_rows():
    df = pd.DataFrame(
        {
            "x": [1, 1, 1, 1, 2, 2, 0],
            "v": [-1.0, 2.0, 3.0, 10.0, 0.0, np.inf, 5.0],
            "diverged": [False, False, False, False, False, False, False],
            "seed": [1, 2, 3, 4, 5, 6, 7],
        }
    )
    points, counts = open_table(df).point_stats(["x"], "v", off_axis="x")
    one = points[points["x"] == 1].iloc[0]
    assert (one["total"], one["kept"]) == (4, 4)
    np.testing.assert_allclose([one["median"], one["lo"], one["hi"]], np.percentile([1, 2, 3, 10], [50, 10, 90]))
    two = points[points["x"] == 2].iloc[0]
    assert (two["total"], two["kept"]) == (2, 0) and np.isnan(two["median"])
    assert counts == {"rows": 7, "diverged": 0, "off_axis": 1, "off_nonzero": 0, "zero": 1, "other": 1}


def test_refusals_name_the_file_its_format_and_what_is_wrong(files, tmp_path):
    other = tmp_path / "other.parquet"
    files["frame"].drop(columns=["seed", "diverged"]).to_parquet(other)
    with pytest.raises(
        TableError,
        match=r"other.parquet' is not a results table: the Parquet file lacks the "
        r"columns seed, diverged\.",
    ):
        open_table(other)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(files["parquet"].read_bytes()[:5000])
    with pytest.raises(TableError, match=r"cut.parquet' is not a readable Parquet file: "):
        open_table(cut)
    typed = tmp_path / "typed.csv"
    text = files["csv"].read_text().splitlines()
    cells = text[7].split(",")
    cells[2] = "fast"  # lr
    typed.write_text("\n".join([*text[:7], ",".join(cells), *text[8:]]) + "\n")
    with pytest.raises(TableError, match=r"its column lr must hold numbers, but holds 'fast'"):
        open_table(typed)
    (tmp_path / "header.csv").write_text(text[0] + "\n")
    with pytest.raises(TableError, match=r"header.csv' holds no runs: the CSV file has its header and no rows"):
        open_table(tmp_path / "header.csv")
    with pytest.raises(TableError, match=r"a results table is a .csv or .parquet file \(got .json\)"):
        (tmp_path / "x.json").write_text("{}")
        open_table(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="No results file at"):
        open_table(tmp_path / "missing.csv")


def test_the_finished_runs_of_a_stopped_grid_are_read_from_its_store(files, tmp_path):
    """A grid stopped halfway: its table is not there, its store is. The table of what finished
    is the complete table's rows of those runs, and says how many of how many it holds."""
    out = tmp_path / "mix.parquet"
    run_grid(GRID, out=out, n_jobs=1, progress=False, chunk_size=12)
    segments = sorted(out.with_name("mix.parquet.store").glob("*.runs"))
    kept = json.loads((out.with_name("mix.parquet.store") / "grid.json").read_text())
    assert kept["spec"]["name"] == "mix" and len(segments) > 2
    out.unlink()
    segments[0].unlink()  # a chunk that had not finished
    data = bytearray(segments[1].read_bytes())
    data[-1] ^= 0xFF  # and one damaged on disk
    segments[1].write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = open_table(out)
    damaged = [str(w.message) for w in caught]
    assert len(damaged) == 1 and segments[1].name in damaged[0] and "fail their sha256 digest" in damaged[0]
    assert "runs; they are left out of this table" in damaged[0]
    runs = GRID.n_runs
    held = table.runs()
    assert 0 < held < runs and not table.complete
    assert (
        table.note.startswith(f"{held:,} of {runs:,} runs, read from ") and "stopped before it finished" in table.note
    )
    got = summarize(table, by=["num_train", "lr", "loss"], epoch=2)
    assert got["count"].sum() == held
    whole = files["frame"]
    rows = table.frame()
    merged = rows.merge(whole, on=["num_train", "lr", "loss", "replicate", "epoch"], suffixes=("", "_whole"))
    assert len(merged) == len(rows) and (merged["w_err_norm"] == merged["w_err_norm_whole"]).all()


def test_fit_power_law_of_a_table_fits_one_value_per_data_stream(files):
    """The table form takes |y| per data stream from the engine: the same fit as the numbers."""
    from study.errors import PoolingError
    from study.fits import fit_power_law

    df = files["frame"]
    at = df[(df["epoch"] == 2) & (df["lr"] == 0.03) & (df["loss"] == "squared")]
    with pytest.raises(PoolingError, match="would pool over lr"):
        fit_power_law(files["parquet"], "w_err_norm")
    chosen = open_table(files["parquet"]).select({"epoch": [2], "lr": [0.03], "loss": ["squared"]})
    got = fit_power_law(chosen, "w_err_norm", against="num_train", n_boot=200)
    expected = fit_power_law(at["num_train"], at["w_err_norm"].abs(), units=at["seed"], n_boot=200)
    assert (got.slope, got.low, got.high, got.units) == (expected.slope, expected.low, expected.high, expected.units)


def test_statistics_in_parts_are_those_of_the_whole_table(files, monkeypatch):
    """A table past the memory budget is summarized in parts of whole cells: the same numbers,
    in the same order, as in one query (here the budget is made tiny to force the parts)."""
    table = open_table(files["parquet"])
    keys = ["num_train", "lr", "loss", "epoch"]
    whole = (
        summarize(table, by=keys, ci=0.95),
        table.point_stats(["num_train", "lr"], "w_err_norm")[0],
        table.stream_values(["num_train"], "ols_w_err_norm", per_stream=True),
        table.lr_epoch_cells("b_err"),
    )
    monkeypatch.setattr(analysis, "_VALUE_BYTES", 10**7)
    assert len(table._parts(keys, 1)) >= 8
    parts = (
        summarize(table, by=keys, ci=0.95),
        table.point_stats(["num_train", "lr"], "w_err_norm")[0],
        table.stream_values(["num_train"], "ols_w_err_norm", per_stream=True),
        table.lr_epoch_cells("b_err"),
    )
    for a, b in zip(whole, parts):
        pd.testing.assert_frame_equal(a, b)


def test_medians_intervals_are_numpys_order_statistics_in_every_cell(files):
    """Cells of a real grid whose runs diverge in part (their units differ from the others'):
    each median and its interval are the order statistics numpy finds among the runs that did
    not diverge, whatever n each cell has."""
    from study.summaries import median_ranks

    df = files["frame"]
    got = summarize(files["parquet"], by=["num_train", "lr", "loss"], epoch=2, ci=0.95)
    assert got["units"].nunique() > 1  # some cells lost runs: the intervals took several queries
    at = df[(df["epoch"] == 2) & ~df["diverged"]]
    for _, cell in got.iterrows():
        rows = at[(at["num_train"] == cell["num_train"]) & (at["lr"] == cell["lr"]) & (at["loss"] == cell["loss"])]
        assert cell["units"] == len(rows)
        values = np.sort(np.abs(rows["w_err_0"].to_numpy()))
        ranks = median_ranks(len(values))
        expected = (values[ranks[0] - 1], values[ranks[1] - 1]) if ranks else (np.nan, np.nan)
        np.testing.assert_array_equal([cell["w_err_0_abs_median_lo"], cell["w_err_0_abs_median_hi"]], expected)
        if len(values):
            assert cell["w_err_0_abs_median"] == pytest.approx(np.median(values), rel=1e-15)


def test_a_table_from_before_the_optimisers_axes_holds_their_defaults(files, tmp_path):
    """A table written without lr_decay, momentum, weight_decay and average_from is plain SGD:
    it reads as their defaults, and summarizes as the table with them does."""
    from study.vocabulary import OPTIMIZER_DEFAULTS

    old = files["frame"].drop(columns=list(OPTIMIZER_DEFAULTS))
    old.to_csv(tmp_path / "old.csv", index=False)
    old.to_parquet(tmp_path / "old.parquet")
    for source in (old, tmp_path / "old.csv", tmp_path / "old.parquet"):
        t = open_table(source)
        assert [t.values(a) for a in OPTIMIZER_DEFAULTS] == [[0.0], [0.0], [0.0], ["none"]]
        by = ["num_train", "lr", "loss"]

        def ordered(summary: pd.DataFrame, by: list = by) -> pd.DataFrame:  # a CSV lists the losses in its own order
            return summary.astype({"loss": str}).sort_values(by, ignore_index=True)

        pd.testing.assert_frame_equal(
            ordered(summarize(source, by=by)), ordered(summarize(files["frame"], by=by)), check_dtype=False
        )


def test_average_from_is_text_in_every_source_and_sorts_none_then_by_epoch(tmp_path):
    df = run_grid(
        Grid(num_train=[20], lr=[0.1], average_from=[10, None, 2], epoch=[1], num_val=10), n_jobs=1, progress=False
    )
    df.to_csv(tmp_path / "a.csv", index=False)
    numbers_only = df[df["average_from"] != "none"]
    numbers_only.to_csv(tmp_path / "b.csv", index=False)  # "2", "10": DuckDB would read numbers
    assert open_table(df).values("average_from") == ["10", "none", "2"]  # the grid's order, as given
    assert open_table(tmp_path / "a.csv").values("average_from") == ["none", "2", "10"]
    t = open_table(tmp_path / "b.csv")
    assert t.values("average_from") == ["2", "10"] and t.columns["average_from"] == "VARCHAR"
    assert summarize(tmp_path / "b.csv", by="average_from")["average_from"].tolist() == ["2", "10"]


def test_a_memory_limit_that_is_not_a_size_is_refused_in_words(monkeypatch):
    from study import analysis

    monkeypatch.setattr(analysis, "MEMORY_LIMIT", "2 gigabytes")
    with pytest.raises(ValueError, match=r"^The STUDY_MEMORY_LIMIT environment variable must be a size such as 600MB"):
        analysis._budget()
    monkeypatch.setattr(analysis, "MEMORY_LIMIT", "1.5GB")
    assert analysis._budget() == int(0.75 * 1.5 * 1024**3)
