"""Options: checked when made, and carried to the processes that train the chunks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from study import Grid, run_grid
from study.options import DEFAULT, Options


def test_options_are_checked_and_frozen():
    with pytest.raises(
        ValueError,
        match=r"^The 'chunk_memory_budget' parameter of Options must be an integer >= 1\. "
        r"Got 0 instead\.$",
    ):
        Options(chunk_memory_budget=0)
    with pytest.raises(ValueError, match=r"^The 'cuda_graphs' parameter of Options must be true or false"):
        Options(cuda_graphs=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.cuda_graphs = False
    with pytest.raises(ValueError, match=r"^The 'options' parameter of run_grid must be a study\.options\.Options"):
        run_grid(Grid(), options={"cuda_graphs": False}, progress=False)


def test_an_option_set_by_the_caller_reaches_loky_workers():
    """chain_features picks the residuals' arithmetic (a chain of fused multiply-adds, or a tree
    over the features), so its effect is seen in a run's last bits: set to 1, runs of 3 features
    trained by two loky worker processes take the tree, as the same runs trained in this process
    with that option do, and not the chain of the default."""
    grid = Grid(
        num_train=[60], num_inputs=[3], w=0.7, lr=[0.05, 0.1], batch_size=[7], epoch=[5], replicates=6, num_val=10
    )
    tree = Options(chain_features=1)
    in_workers = run_grid(grid, n_jobs=2, chunk_size=6, backend="loky", options=tree, progress=False)
    here = run_grid(grid, n_jobs=1, options=tree, progress=False)
    default = run_grid(grid, n_jobs=2, chunk_size=6, backend="loky", progress=False)
    columns = [c for c in here.columns if c.startswith("w_hat_")]
    np.testing.assert_array_equal(in_workers[columns].to_numpy(), here[columns].to_numpy())
    assert not np.array_equal(in_workers[columns].to_numpy(), default[columns].to_numpy())
