"""The results table's columns and files: atomic writes, round trips, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.analysis import read_results
from study.grid import Grid
from study.runner import run_grid
from study.schema import write_csv


def test_write_csv_is_atomic_and_round_trips(tmp_path, small_table):
    path = tmp_path / "t.csv"
    write_csv(small_table, path)
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left behind
    back = read_results(path)
    pd.testing.assert_frame_equal(back, small_table, check_dtype=False)


def test_write_csv_failure_keeps_the_old_file(tmp_path, small_table):
    path = tmp_path / "t.csv"
    path.write_text("old")

    class Boom(pd.DataFrame):
        def to_csv(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv(Boom(small_table), path)
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_read_results_refuses_other_files(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="is not a results table: the CSV file lacks the columns num_train, lr"):
        read_results(other)
    with pytest.raises(FileNotFoundError, match="No results file at"):
        read_results(tmp_path / "missing.csv")


def test_write_csv_rounds_a_summary_to_its_significant_digits(tmp_path):
    df = pd.DataFrame({"a": [0.123456789123, 1234567.891], "n": [3, 4]})
    write_csv(df, tmp_path / "full.csv")
    write_csv(df, tmp_path / "summary.csv", significant=6)
    assert (tmp_path / "full.csv").read_text().splitlines()[1] == "0.123456789123,3"
    assert (tmp_path / "summary.csv").read_text().splitlines()[1:] == ["0.123457,3", "1.23457e+06,4"]


def test_a_parquet_table_is_the_frame_and_carries_its_spec(tmp_path):
    """run_grid(out=*.parquet): the same rows and dtypes as the DataFrame it returns, the spec
    inside the file, the same bytes for the same seeded grid, and the same numbers as the CSV."""
    from study.schema import table_metadata

    grid = Grid(num_train=[20, 40], lr=[0.01, 0.1], loss=["squared", "huber"], epoch=[1], replicates=2, name="pq")
    df = run_grid(grid, out=tmp_path / "a.parquet", n_jobs=1, progress=False)
    back = read_results(tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert isinstance(back["loss"].dtype, pd.CategoricalDtype) and back["loss"].cat.categories.tolist() == [
        "squared",
        "huber",
    ]
    meta = table_metadata(tmp_path / "a.parquet")
    assert meta["spec"]["lr"] == [0.01, 0.1] and meta["stream"] == "counter" and "wall_time_s" not in meta
    assert (tmp_path / "a.meta.json").is_file()
    run_grid(grid, out=tmp_path / "b.parquet", n_jobs=1, progress=False)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    run_grid(grid, out=tmp_path / "c.csv", n_jobs=1, progress=False)
    pd.testing.assert_frame_equal(read_results(tmp_path / "c.csv"), back, check_exact=False, rtol=1e-15)


def test_a_file_that_is_not_a_results_table_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"x.parquet' is not a readable Parquet file: Parquet magic bytes not found"):
        read_results(bad)


def test_row_norms_are_numpys_to_the_bit_for_the_books_dimensions():
    from study.schema import _row_norms

    rng = np.random.default_rng(3)
    for d in (1, 2):
        x = rng.standard_normal((10_000, d)) * rng.lognormal(0, 5, size=(10_000, 1))
        x[0] = np.inf
        x[1, 0] = np.nan
        np.testing.assert_array_equal(_row_norms(x), np.linalg.norm(x, axis=1))
    x = rng.standard_normal((1000, 7))
    np.testing.assert_allclose(_row_norms(x), np.linalg.norm(x, axis=1), rtol=1e-15)
