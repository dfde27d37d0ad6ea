"""The run-keyed store: segments on disk, lookups by key, grids that grow, tables assembled in blocks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from study.analysis import read_results
from study.grid import Grid
from study.plan import Plan
from study.runner import run_grid
from study.schema import write_csv, write_table_blocks
from study.store import RunStore, Segment, read_segment_head, save_segment, table_blocks, table_frame


def _segment(keys, checkpoints=(0, 1, 3), seed=0) -> Segment:
    rng = np.random.default_rng(seed)
    R, C = len(keys), len(checkpoints)
    return Segment(
        np.asarray(keys, dtype=np.uint64),
        tuple(checkpoints),
        {
            "w_hat_0": rng.standard_normal(R * C).astype(np.float32),
            "ols_b_err": rng.standard_normal(R * C),
            "steps": np.tile(np.asarray(checkpoints, dtype=np.int64) * 7, R),
            "diverged": rng.random(R * C) < 0.3,
        },
    )


def _meta(path):
    return json.loads(path.with_name(path.stem + ".meta.json").read_text())


def test_a_segment_reads_back_from_disk_as_from_memory(tmp_path):
    seg = _segment([5, 2**63 + 7, 11, 3])
    on_disk = RunStore(tmp_path / "s", engine="batched", stream="counter", checkpoints=(0, 1, 3))
    on_disk.add(seg, "a")
    in_memory = RunStore(None, engine="batched", stream="counter", checkpoints=(0, 1, 3))
    in_memory.add(seg, "a")
    reopened = RunStore(tmp_path / "s", engine="batched", stream="counter", checkpoints=(0, 1, 3))
    keys = np.array([11, 5, 3], dtype=np.uint64)
    rows = np.array([2, 0, 3])
    for store in (on_disk, in_memory, reopened):
        assert len(store) == 4
        got = store.gather(keys)
        for name, values in seg.columns.items():
            np.testing.assert_array_equal(got[name], values.reshape(4, 3)[rows].ravel())
            assert got[name].dtype == values.dtype
        np.testing.assert_array_equal(
            store.has(np.array([3, 4, 2**63 + 7, 2**64 - 1], dtype=np.uint64)), [True, False, True, False]
        )
    with pytest.raises(KeyError):
        reopened.gather(np.array([4], dtype=np.uint64))


@pytest.mark.parametrize("on_disk", [False, True])
def test_gather_takes_whole_segments_in_stretches_and_scattered_runs_one_by_one(tmp_path, on_disk):
    """Two segments of 200 runs, asked for (a) as a table asks, each segment's runs in a few
    contiguous stretches, and (b) in a shuffled order, and (c) at a subset of checkpoints."""
    a, b = _segment(range(200), seed=1), _segment(range(1000, 1200), seed=2)
    store = RunStore(tmp_path / "s" if on_disk else None, engine="batched", stream="counter", checkpoints=(0, 1, 3))
    store.add(a, "a")
    store.add(b, "b")
    every = np.concatenate([a.keys, b.keys])

    def expected(keys, name, pick=(0, 1, 2)):
        values = np.concatenate([a.columns[name], b.columns[name]]).reshape(400, 3)[:, list(pick)]
        return values[np.searchsorted(every, keys)].ravel()

    interleaved = np.concatenate([a.keys[:100], b.keys[:100], a.keys[100:], b.keys[100:]])
    shuffled = np.random.default_rng(0).permutation(every)
    for keys in (interleaved, shuffled):
        got = store.gather(keys)
        for name in a.columns:
            np.testing.assert_array_equal(got[name], expected(keys, name))
    fewer = RunStore(tmp_path / "s" if on_disk else None, engine="batched", stream="counter", checkpoints=(0, 3))
    for seg, name in ((a, "a"), (b, "b")) if not on_disk else ():
        fewer.add(seg, name)
    for name, values in fewer.gather(interleaved).items():
        np.testing.assert_array_equal(values, expected(interleaved, name, pick=(0, 2)))


def test_a_store_serves_a_subset_of_its_checkpoints_and_never_a_superset(tmp_path):
    seg = _segment([1, 2], checkpoints=(0, 1, 3))
    save_segment(tmp_path / "x.runs", seg, engine="batched", stream="counter")
    fewer = RunStore(tmp_path, engine="batched", stream="counter", checkpoints=(0, 3))
    np.testing.assert_array_equal(fewer.gather(np.array([2], dtype=np.uint64))["steps"], [0, 21])
    more = RunStore(tmp_path, engine="batched", stream="counter", checkpoints=(0, 1, 3, 10))
    assert len(more) == 0 and not more.has(np.array([1], dtype=np.uint64)).any()


def test_segments_of_another_engine_stream_or_schema_are_never_read(tmp_path):
    save_segment(tmp_path / "a.runs", _segment([1]), engine="reference", stream="counter")
    save_segment(tmp_path / "b.runs", _segment([2]), engine="batched", stream="torch")
    save_segment(tmp_path / "c.runs", _segment([3]), engine="batched", stream="counter")
    store = RunStore(tmp_path, engine="batched", stream="counter", checkpoints=(0, 1, 3))
    np.testing.assert_array_equal(store.has(np.array([1, 2, 3], dtype=np.uint64)), [False, False, True])
    import study.store

    data = (tmp_path / "c.runs").read_bytes()
    assert read_segment_head(tmp_path / "c.runs", engine="batched", stream="counter") is not None
    (tmp_path / "c.runs").write_bytes(data.replace(b'"schema": 1', b'"schema": 9'))  # the digest no longer holds
    assert read_segment_head(tmp_path / "c.runs", engine="batched", stream="counter") is None
    assert study.store.MAGIC == data[: len(study.store.MAGIC)]


def test_segments_of_an_earlier_engine_revision_are_recomputed(tmp_path, monkeypatch):
    """A change that moves a run's numbers bumps ENGINE_REVISIONS; what the earlier arithmetic
    stored is then never mixed with what the new one computes."""
    import study.store

    save_segment(tmp_path / "old.runs", _segment([1]), engine="batched", stream="counter")
    assert RunStore(tmp_path, engine="batched", stream="counter", checkpoints=(0, 1, 3)).has(
        np.array([1], dtype=np.uint64)
    )[0]
    monkeypatch.setitem(study.store.ENGINE_REVISIONS, "batched", study.store.ENGINE_REVISIONS["batched"] + 1)
    assert not RunStore(tmp_path, engine="batched", stream="counter", checkpoints=(0, 1, 3)).has(
        np.array([1], dtype=np.uint64)
    )[0]


def test_a_run_kept_twice_is_taken_from_the_later_segment(tmp_path):
    store = RunStore(None, engine="batched", stream="counter", checkpoints=(0, 1, 3))
    store.add(_segment([1, 2], seed=1), "a")
    later = _segment([2, 3], seed=2)
    store.add(later, "b")
    assert len(store) == 3
    np.testing.assert_array_equal(
        store.gather(np.array([2], dtype=np.uint64))["ols_b_err"], later.columns["ols_b_err"][:3]
    )


def test_clear_empties_the_store(tmp_path):
    store = RunStore(tmp_path, engine="batched", stream="counter", checkpoints=(0, 1, 3))
    store.add(_segment([1, 2]), "a")
    (tmp_path / ".a.runs.123.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("a user's file")
    store.clear()
    assert len(store) == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


GRID = dict(num_train=[20, 50], lr=[0.03, 0.3], loss=["squared", "huber"], epoch=[1, 3], num_val=50)


@pytest.mark.parametrize("block_rows", [1, 7, 48, 10**6])
def test_the_table_in_blocks_is_the_table_whole(tmp_path, block_rows):
    grid = Grid(**GRID, replicates=3)
    whole = run_grid(grid, n_jobs=1, progress=False)
    plan = Plan(grid, lambda *_: 5)
    store = RunStore(None, engine="batched", stream="counter", checkpoints=grid.checkpoints)
    from study.dispatch import train_chunk

    for chunk in plan.chunks():
        store.add(train_chunk(chunk, grid.checkpoints, "batched", "cpu", 0)[1], "x")
    blocks = list(table_blocks(plan, store, block_rows=block_rows))
    assert max(len(b) for b in blocks) <= max(block_rows, len(grid.checkpoints))
    pd.testing.assert_frame_equal(pd.concat(blocks, ignore_index=True), whole)
    pd.testing.assert_frame_equal(table_frame(plan, store), whole)
    for suffix in ("csv", "parquet"):
        path = tmp_path / f"t{block_rows}.{suffix}"
        write_table_blocks(iter(blocks), path, {"x": 1})
        pd.testing.assert_frame_equal(read_results(path), read_results_of(whole, tmp_path / f"w.{suffix}"))
    write_csv(whole, tmp_path / "whole.csv")
    assert (tmp_path / f"t{block_rows}.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def read_results_of(df: pd.DataFrame, path) -> pd.DataFrame:
    write_table_blocks(iter([df]), path)
    return read_results(path)


def test_growing_replicates_trains_only_the_new_ones_and_gives_the_fresh_table(tmp_path):
    out = tmp_path / "g.csv"
    run_grid(Grid(**GRID, replicates=2), out=out, n_jobs=1, progress=False)
    grown = Grid(**GRID, replicates=4)
    df = run_grid(grown, out=out, n_jobs=1, progress=False)
    meta = _meta(out)
    assert (meta["runs_computed"], meta["runs_reused"]) == (16, 16)
    fresh = tmp_path / "fresh.csv"
    pd.testing.assert_frame_equal(df, run_grid(grown, out=fresh, n_jobs=1, progress=False))
    assert out.read_bytes() == fresh.read_bytes()


def test_another_lr_trains_only_its_runs_and_a_smaller_grid_trains_nothing(tmp_path):
    out = tmp_path / "g.parquet"
    run_grid(Grid(**GRID, replicates=2), out=out, n_jobs=1, progress=False)
    more = dict(GRID, lr=[0.03, 0.1, 0.3])
    df = run_grid(Grid(**more, replicates=2), out=out, n_jobs=1, progress=False)
    assert (_meta(out)["runs_computed"], _meta(out)["runs_reused"]) == (8, 16)
    pd.testing.assert_frame_equal(df, run_grid(Grid(**more, replicates=2), n_jobs=1, progress=False))
    fewer = dict(GRID, lr=[0.3], loss=["huber"], num_train=[50])
    df = run_grid(Grid(**fewer, replicates=2), out=out, n_jobs=1, progress=False)
    assert (_meta(out)["runs_computed"], _meta(out)["runs_reused"]) == (0, 2)
    pd.testing.assert_frame_equal(df, run_grid(Grid(**fewer, replicates=2), n_jobs=1, progress=False))


def test_checkpoints_the_store_holds_are_reused_and_others_retrain(tmp_path):
    out = tmp_path / "g.csv"
    run_grid(Grid(**GRID), out=out, n_jobs=1, progress=False)  # epochs 1, 3
    fewer = dict(GRID, epoch=[3])
    df = run_grid(Grid(**fewer), out=out, n_jobs=1, progress=False)
    assert (_meta(out)["runs_computed"], _meta(out)["runs_reused"]) == (0, 8)
    pd.testing.assert_frame_equal(df, run_grid(Grid(**fewer), n_jobs=1, progress=False))
    more = dict(GRID, epoch=[1, 3, 5])
    df = run_grid(Grid(**more), out=out, n_jobs=1, progress=False)
    assert (_meta(out)["runs_computed"], _meta(out)["runs_reused"]) == (8, 0)
    pd.testing.assert_frame_equal(df, run_grid(Grid(**more), n_jobs=1, progress=False))


def test_a_changed_stream_or_engine_reuses_nothing(tmp_path):
    out = tmp_path / "g.csv"
    run_grid(Grid(**GRID), out=out, n_jobs=1, progress=False)
    run_grid(Grid(**GRID, stream="torch"), out=out, n_jobs=1, progress=False)
    assert _meta(out)["runs_reused"] == 0
    run_grid(Grid(**GRID), out=out, n_jobs=1, progress=False, engine="reference")
    assert _meta(out)["runs_reused"] == 0
    run_grid(Grid(**GRID), out=out, n_jobs=1, progress=False)
    assert _meta(out)["runs_reused"] == 8  # the first call's runs, still in the store


def test_frame_false_writes_the_same_table_and_returns_none(tmp_path):
    grid = Grid(**GRID, replicates=2)
    for suffix in ("csv", "parquet"):
        assert run_grid(grid, out=tmp_path / f"a.{suffix}", n_jobs=1, progress=False, frame=False) is None
        df = run_grid(grid, out=tmp_path / f"b.{suffix}", n_jobs=1, progress=False)
        assert (tmp_path / f"a.{suffix}").read_bytes() == (tmp_path / f"b.{suffix}").read_bytes()
        assert len(df) == 16 * 3
    with pytest.raises(ValueError, match=r"^The 'frame' parameter of run_grid must be True unless out is given"):
        run_grid(grid, frame=False)


def test_a_table_larger_than_memory_is_refused_as_a_frame_before_any_work(tmp_path, monkeypatch):
    import study.runner

    monkeypatch.setattr(study.runner, "_available_memory", lambda: 10_000)
    with pytest.raises(
        ValueError,
        match=r"^The 'frame' parameter of run_grid must be False for this grid: its table "
        r"would take about .* in memory, and 10\.0 kB is available",
    ):
        run_grid(Grid(**GRID), out=tmp_path / "g.parquet", n_jobs=1, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert run_grid(Grid(**GRID), out=tmp_path / "g.parquet", n_jobs=1, progress=False, frame=False) is None


def test_gather_fills_a_column_a_segment_lacks_and_derives_w_err_max_of_older_segments(tmp_path):
    """Segments of runs of different widths: a feature's column a run lacks is NaN; w_err_max,
    absent from segments written before it existed, is the largest |w_err_j| of the run."""
    rng = np.random.default_rng(3)
    C = 2
    old = Segment(
        np.array([1, 2], dtype=np.uint64),
        (0, 1),
        {
            "w_err_0": rng.standard_normal(2 * C).astype(np.float32),
            "w_err_1": rng.standard_normal(2 * C).astype(np.float32),
        },
    )
    wide = Segment(np.array([3], dtype=np.uint64), (0, 1), {"w_err_max": np.array([0.5, 0.25], dtype=np.float32)})
    store = RunStore(tmp_path / "s", engine="batched", stream="counter", checkpoints=(0, 1))
    store.add(old, "old")
    store.add(wide, "wide")
    got = store.gather(np.array([3, 1, 2], dtype=np.uint64), ["w_err_0", "w_err_1", "w_err_max"])
    expected_max = np.maximum(np.abs(old.columns["w_err_0"]), np.abs(old.columns["w_err_1"]))
    np.testing.assert_array_equal(got["w_err_max"], [0.5, 0.25, *expected_max])
    np.testing.assert_array_equal(got["w_err_0"][2:], old.columns["w_err_0"])
    assert np.isnan(got["w_err_0"][:2]).all() and got["w_err_0"].dtype == np.float32
