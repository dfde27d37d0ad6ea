from __future__ import annotations

import numpy as np
import pytest

from study.engine import estimated_seconds, max_chunk_runs
from study.grid import Grid, log_sizes
from study.plan import Chunk, Plan, chunk_cap, chunk_id, grid_seconds

MIXED = dict(
    num_train=[5, 10],
    lr=[0.1, 0.3],
    loss=["squared", "huber"],
    noise=[0.1, 0.2],
    noise_kind=["gaussian", "outliers"],
    batch_size=[8, 32],
    replicates=3,
    stream="torch",
)


@pytest.mark.parametrize("cap", [1, 4, 10, 10**6])
def test_plan_chunks_hold_every_run_once_as_the_grid_defines_it(cap):
    """The columns of the planned chunks are the grid's runs: the same values, seeds and keys as
    Grid.runs() gives one by one, every run once, whole streams in a chunk."""
    grid = Grid(**MIXED)
    runs = grid.runs()
    plan = Plan(grid, lambda *_: cap)
    chunks = list(plan.chunks())
    index = np.concatenate([c.index for c in chunks])
    assert sorted(index.tolist()) == list(range(len(runs))) and plan.n_runs == len(runs)
    for c in chunks:
        assert c.runs() == [runs[i] for i in c.index]
        assert c.key.tolist() == [int(runs[i].key, 16) for i in c.index]
        assert c.seed.tolist() == [runs[i].seed for i in c.index]
        _, per_stream = np.unique(c.seed, return_counts=True)
        assert (per_stream == plan.runs_per_stream).all()  # whole streams


def test_a_chunks_runs_are_in_grid_order_within_it():
    grid = Grid(num_train=[20], lr=[0.1, 0.3], loss=["squared", "huber"], replicates=4)
    chunk = next(Plan(grid, lambda *_: 10**6).chunks())
    assert chunk.index.tolist() == list(range(16))


def test_a_ten_million_run_grid_is_planned_without_making_its_runs():
    grid = Grid(
        num_train=log_sizes(5, 10_000),
        lr=[0.01, 0.03, 0.1],
        loss=["squared", "huber"],
        epoch=[1, 2, 3, 5, 10],
        replicates=151_516,
    )
    plan = Plan(grid, lambda *_: 500_000)
    assert plan.n_runs == 10_000_056
    assert sum(spec.runs for spec in plan.specs) == plan.n_runs
    chunk = plan.chunk(plan.specs[-1])  # one chunk made on its own, the last of the grid
    assert len(chunk) == plan.specs[-1].runs and chunk.num_train == 10_000
    assert chunk.index.max() == plan.n_runs - 1


def test_chunk_id_names_the_runs_the_engine_the_stream_and_the_checkpoints():
    grid = Grid(num_train=[20], lr=[0.1, 0.3], replicates=2)
    chunk = next(Plan(grid, lambda *_: 10**6).chunks())
    base = chunk_id(chunk, [0, 1], "batched", 1)
    assert base == chunk_id(next(Plan(grid, lambda *_: 10**6).chunks()), [0, 1], "batched", 1)
    assert (
        len(
            {
                base,
                chunk_id(chunk, [0, 2], "batched", 1),
                chunk_id(chunk, [0, 1], "reference", 1),
                chunk_id(chunk, [0, 1], "batched", 2),
                chunk_id(chunk.take(slice(0, 2)), [0, 1], "batched", 1),
            }
        )
        == 5
    )
    torch_grid = Grid(num_train=[20], lr=[0.1, 0.3], replicates=2, stream="torch")
    assert chunk_id(next(Plan(torch_grid, lambda *_: 10**6).chunks()), [0, 1], "batched", 1) != base


def test_chunk_from_runs_take_and_indexing_agree():
    grid = Grid(**MIXED)
    chunk = next(Plan(grid, lambda *_: 10**6).chunks())
    again = Chunk.from_runs(chunk.runs())
    for name in ("lr", "loss", "sigma", "reduction", "noise", "noise_kind", "replicate", "seed", "index", "key"):
        assert getattr(again, name).tolist() == getattr(chunk, name).tolist()
    assert chunk[3] == chunk.runs()[3] and chunk[-1] == chunk.runs()[-1]
    assert chunk.take(np.array([2, 0])).runs() == [chunk.runs()[2], chunk.runs()[0]]
    with pytest.raises(ValueError, match="must share num_train"):
        Chunk.from_runs(Grid(num_train=[10, 20]).runs())


def test_chunk_cap_balances_cpu_work_and_fills_a_gpu():
    kw = dict(engine="batched", chunk_size=None, max_runs=max_chunk_runs, seconds=estimated_seconds)
    fixed = estimated_seconds(10_000, 32, 0, 10)
    per_run = estimated_seconds(10_000, 32, 1, 10) - fixed
    big = Grid(num_train=[10_000], lr=[0.1, 0.3], replicates=40_000, epoch=[10])
    share = grid_seconds(big, estimated_seconds) / (4 * 8)
    assert share > 4 * fixed
    assert chunk_cap(big, budget=2**40, cores=8, **kw)(10_000, 32, 0) == int(
        share / per_run
    )  # a quarter of a core's share
    small = Grid(num_train=[10_000], lr=[0.1, 0.3], replicates=100, epoch=[10])
    assert chunk_cap(small, budget=2**40, cores=8, **kw)(10_000, 32, 0) == int(4 * fixed / per_run)  # 4x its fixed cost
    assert chunk_cap(big, budget=2**40, cores=0, **kw)(10_000, 32, 0) > big.replicates * 2  # a GPU: memory alone
    assert chunk_cap(big, budget=2**40, cores=0, **{**kw, "chunk_size": 6})(10_000, 32, 0) == 6
    assert chunk_cap(big, budget=2**40, cores=8, **{**kw, "engine": "reference"})(10_000, 32, 0) == 256
    tight = chunk_cap(big, budget=2**26, cores=0, **kw)(10_000, 32, 0)
    assert tight == max_chunk_runs(10_000, 1000, 2, 2**26, 2) < 200  # the memory budget bounds it
