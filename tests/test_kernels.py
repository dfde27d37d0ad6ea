"""The compiled step loop: the tensor path's numbers, bit for bit, and the tensor path where
Numba is missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study import kernels
from study.engine import train_batched, train_batched_together
from study.grid import Grid
from study.options import Options
from study.plan import Plan

needs_numba = pytest.mark.skipif(not kernels.AVAILABLE, reason="Numba is not installed")

FIELDS = ("w_hat", "b_hat", "train_loss", "val_mse", "grad_w", "grad_b", "ols_w", "ols_b")


def _chunks(grid: Grid) -> list:
    plan = Plan(grid, lambda *_: 10**9)
    return [plan.chunk(spec) for spec in plan.specs]


def _assert_same_bits(a, b) -> None:
    for field in FIELDS:
        assert np.array_equal(getattr(a, field), getattr(b, field), equal_nan=True), field


def test_torch_addcmul_is_a_fused_multiply_add_on_this_cpu():
    """The premise of the compiled loop's bits: a + b·c rounded once, at every position."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(10_007, generator=g) for _ in range(3))
    once = (a.double() + b.double() * c.double()).float()  # exact product, one rounding (to float64, then float32)
    twice = a + b * c
    assert torch.equal(torch.addcmul(a, b, c), once) and not torch.equal(twice, once)


#: Plain SGD over every axis the compiled loop serves: both losses and reductions, σ, both
#: streams, ragged and dropped last minibatches, a batch larger than the data, diverging lrs,
#: and more features than chain_features (the residual's products by a tree).
GRIDS = {
    "losses and reductions": Grid(
        num_train=[7, 100],
        lr=[0.01, 0.3, 30.0],
        loss=["squared", "huber"],
        sigma=[0.1, 1.0],
        reduction=["mean", "sum"],
        epoch=[1, 3],
        replicates=3,
    ),
    "torch stream": Grid(
        num_train=[50], lr=[0.01, 3.0], loss=["squared", "huber"], epoch=[1, 2], replicates=3, stream="torch"
    ),
    "drop_last": Grid(num_train=[37], batch_size=[5, 64], drop_last=[True, False], lr=[0.1], epoch=[2], replicates=2),
    "wide": Grid(
        num_train=[40], num_inputs=[3, 20], w=0.01, lr=[0.01, 0.05], epoch=[2], replicates=2, noise_kind=["outliers"]
    ),
}


@needs_numba
@pytest.mark.parametrize("name", list(GRIDS))
def test_the_compiled_loop_gives_the_tensor_paths_bits(name):
    grid = GRIDS[name]
    for chunk in _chunks(grid):
        tensor = train_batched(chunk, grid.checkpoints, options=Options(compiled=False))
        compiled = train_batched(chunk, grid.checkpoints, options=Options(compiled=True))
        _assert_same_bits(tensor, compiled)


@needs_numba
def test_chunks_trained_together_give_the_same_bits_compiled():
    grid = Grid(num_train=[5, 20, 100], lr=[0.1, 1.0], loss=["squared", "huber"], epoch=[1, 2], replicates=4)
    chunks = _chunks(grid)
    tensor = train_batched_together(chunks, grid.checkpoints, options=Options(compiled=False))
    compiled = train_batched_together(chunks, grid.checkpoints, options=Options(compiled=True))
    for a, b in zip(tensor, compiled, strict=True):
        _assert_same_bits(a, b)


@needs_numba
def test_plain_chunks_on_a_cpu_take_the_compiled_loop_and_others_do_not(monkeypatch):
    calls = []
    for name in ("plain_epoch", "plain_epochs"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *args, _real=real, _name=name: calls.append(_name) or _real(*args))
    counter = Grid(num_train=[20], lr=[0.1], epoch=[2, 5], replicates=2)
    train_batched(_chunks(counter)[0], counter.checkpoints)
    assert calls == ["plain_epochs"]  # one call a chunk, every epoch's order drawn in it
    calls.clear()
    torch_stream = Grid(num_train=[20], lr=[0.1], epoch=[2], replicates=2, stream="torch")
    train_batched(_chunks(torch_stream)[0], torch_stream.checkpoints)
    assert calls == ["plain_epoch", "plain_epoch"]  # one an epoch: the orders come from the runs' generators
    calls.clear()
    general = Grid(num_train=[20], lr=[0.1], momentum=[0.5], epoch=[2], replicates=2)
    train_batched(_chunks(general)[0], general.checkpoints)
    train_batched(_chunks(counter)[0], counter.checkpoints, options=Options(compiled=False))
    assert calls == []  # the optimiser's axes, and compiled=False, keep the tensor path


@needs_numba
def test_the_huber_sums_of_two_features_are_the_general_loops_bits():
    """d = 2 has its own loop (an example's terms in one pass, the tree's first level added as
    they are made): the general loop's sums, bit for bit, for even and odd n, clamped and
    unclamped residuals, and infinite and NaN parameters (a diverged run's)."""
    from study.sums import tree_levels

    rng = np.random.default_rng(7)
    S, m, h0 = 3, 5, 1
    for n in [2, 3, 4, 5, 31, 32, 33, 100, 999, 1000]:
        Z = rng.standard_normal((S, 4, n + 3)).astype(np.float32)
        Z[:, 2] = 1.0  # z = (x_0, x_1, 1, y), and validation examples past n
        theta = (rng.standard_normal((S, m, 4)) * 3).astype(np.float32)
        theta[..., 3] = -1.0
        theta[0, 2, 0], theta[1, 3, 1], theta[2, 4, 2] = np.inf, np.nan, -np.inf
        lo = np.full((S, m - h0), -1.0, np.float32)
        hi = np.full((S, m - h0), 0.5, np.float32)
        lo[0, 0], hi[0, 0] = -np.inf, np.inf  # a Huber threshold no residual reaches
        levels = kernels.tree_array(tree_levels(n))
        fast, general = (np.empty((S, m - h0, 4), np.float32) for _ in range(2))
        kernels.huber_sums(theta, h0, Z, n, lo, hi, levels, fast)
        kernels._huber_sums_general(theta, h0, Z, n, lo, hi, levels, general)
        assert np.array_equal(fast.view(np.uint32), general.view(np.uint32)), n
        assert np.isnan(fast[1, 2]).all() and np.isfinite(fast[2, 0]).all()


@needs_numba
def test_the_compiled_second_moments_are_the_trees_sums():
    """G[s] = Σ z zᵀ over examples lo..hi in float64, each entry summed by study.sums' tree (the
    compiled loop adds the tree's first level as it makes the products), for even and odd counts."""
    from study.sums import tree_levels, tree_sum_

    Z = np.random.default_rng(3).standard_normal((2, 4, 1010)).astype(np.float32)
    for lo, hi in [(0, 1), (0, 2), (3, 6), (0, 33), (10, 1010), (5, 1004)]:
        G = np.empty((2, 4, 4))
        kernels.second_moments(Z, lo, hi, kernels.tree_array(tree_levels(hi - lo)), G)
        Zd = torch.from_numpy(Z[:, :, lo:hi]).double()
        want = tree_sum_(Zd[:, :, None, :] * Zd[:, None, :, :])
        assert np.array_equal(G, want.numpy()), (lo, hi)


@needs_numba
def test_the_compiled_permutations_are_the_streams_integers():
    from study import streams

    for n, seeds, epochs in (
        (1, [0], [1]),
        (3, [5, 2**40 + 7], [1, 2]),
        (1000, list(range(20)), [1, 2, 3]),
        (10_000, [2**62 + 3], [7]),
    ):
        out = np.empty((len(epochs), len(seeds), n), np.int64)
        kernels.permutations(np.array(seeds, np.int64), n, np.array(epochs, np.int64), out)
        assert np.array_equal(out, streams.permutations(torch.tensor(seeds), n, epochs).numpy())


@needs_numba
def test_the_compiled_philox_words_are_the_tensor_paths(monkeypatch):
    """streams.words and uniforms on a CPU take the compiled loops; the tensor path (a GPU's, or
    a machine's without Numba) gives the same integers and floats, for any count, epochs and
    seeds of 64 bits."""
    from study import streams

    seeds = torch.tensor([0, 1, 2**32 - 1, 2**40 + 7, 2**63 - 1])
    cases = [("features", 1, 0), ("noise", 7, 3), ("permutation", 1001, [0, 1, 2**31]), ("init", 4, 5)]
    compiled = [streams.words(seeds, *case) for case in cases]
    floats = [
        (f, f(seeds, p, n, 3))
        for f in (streams.uniforms, streams.normals)
        for p, n in (("noise", 1), ("features", 999))
    ]
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    for case, got in zip(cases, compiled, strict=True):
        assert torch.equal(got, streams.words(seeds, *case)), case
    for (f, got), (p, n) in zip(floats, [("noise", 1), ("features", 999)] * 2, strict=True):
        assert torch.equal(got, f(seeds, p, n, 3)), (f.__name__, p, n)


def test_without_numba_the_tensor_path_runs_and_says_so_once(monkeypatch):
    grid = Grid(num_train=[20], lr=[0.1], epoch=[2], replicates=2)
    chunk = _chunks(grid)[0]
    expected = train_batched(chunk, grid.checkpoints, options=Options(compiled=False))
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    monkeypatch.setattr(kernels, "_said", False)
    with pytest.warns(RuntimeWarning, match="^Numba is not available here: the batched engine takes its tensor path"):
        got = train_batched(chunk, grid.checkpoints)
    _assert_same_bits(expected, got)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once a process, not once a chunk
        train_batched(chunk, grid.checkpoints)
