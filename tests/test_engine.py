from __future__ import annotations

import numpy as np
import pytest
import torch

from study.engine import CHUNK_MEMORY_BUDGET, ChunkResult, max_chunk_runs, train_batched, train_reference
from study.grid import Grid
from study.options import Options
from study.plan import Plan

FIELDS = ("w_hat", "b_hat", "train_loss", "val_mse", "grad_w", "grad_b")
CHECKPOINTS = [0, 1, 2, 4]


STREAMS = ["counter", "torch"]


def mixed_runs(stream: str = "counter") -> list:
    """Every axis varied: sizes around the batch size, both losses and reductions, several
    sigmas and lrs (one diverging), all noise kinds."""
    common = dict(
        num_train=[1, 5, 31, 32, 33, 100],
        loss=["squared", "huber"],
        sigma=[0.5, 2.0],
        noise_kind=["gaussian", "student_t", "outliers"],
        noise=[0.01, 0.5],
        epoch=[1, 2, 4],
        num_val=20,
        stream=stream,
    )
    grids = [
        Grid(lr=[0.01, 0.1], reduction=["mean"], **common),
        Grid(lr=[0.001, 0.003], reduction=["sum"], **common),  # the same step size per example
        Grid(lr=[10.0], reduction=["mean"], **{**common, "loss": ["squared"]}),  # diverges
    ]
    runs = [r for g in grids for r in g.runs()]
    return runs


def by_size(runs):
    groups = {}
    for r in runs:
        groups.setdefault(r.num_train, []).append(r)
    return groups


def assert_close(batched: ChunkResult, reference: ChunkResult, same_data: bool = True):
    """Within max(1e-5, 1e-5 |ref|) at every checkpoint before divergence; flagged alike after.
    Least squares is the same function of the same data, so equal to the bit when both sides
    hold the same data (``same_data``), and within the tolerance when they do not (a GPU's
    counter normals differ from a CPU's by an ulp)."""
    np.testing.assert_array_equal(batched.diverged, reference.diverged)
    live = ~reference.diverged
    for field in FIELDS:
        a, b = getattr(batched, field)[live], getattr(reference, field)[live]
        bad = ~(np.abs(a - b) <= np.maximum(1e-5, 1e-5 * np.abs(b)))
        assert not bad.any(), f"{field}: {bad.sum()} values differ, worst {np.abs(a - b)[bad].max()}"
    assert np.array_equal(batched.steps, reference.steps)
    if same_data:
        np.testing.assert_array_equal(batched.ols_w, reference.ols_w)
        np.testing.assert_array_equal(batched.ols_b, reference.ols_b)
    else:
        np.testing.assert_allclose(batched.ols_w, reference.ols_w, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(batched.ols_b, reference.ols_b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stream", STREAMS)
def test_train_batched_equals_reference_run_for_run_on_a_mixed_grid(stream):
    runs = mixed_runs(stream)
    diverged = 0
    for group in by_size(runs).values():
        batched = train_batched(group, CHECKPOINTS)
        reference = train_reference(group, CHECKPOINTS)
        assert_close(batched, reference)
        diverged += int(batched.diverged[:, -1].sum())
    assert diverged > 0  # the diverging lr really diverged, and was matched


@pytest.mark.parametrize("batch_size, w", [(1, [2.0, -3.4]), (7, [1.5]), (64, [2.0, -3.4]), (5, [1, -2, 3, -4, 0.5])])
def test_train_batched_equals_reference_for_other_batch_sizes_and_dimensions(batch_size, w):
    """The minibatch's tree of adds for a batch of 1 (no adds), an odd one, one wider than the
    data (a single padded minibatch), and 1 or 5 features."""
    runs = Grid(
        num_train=[33],
        batch_size=[batch_size],
        w=w,
        lr=[0.003, 0.01],
        loss=["squared", "huber"],
        reduction=["mean", "sum"],
        epoch=[1, 3],
        replicates=2,
    ).runs()
    batched, reference = train_batched(runs, [0, 1, 3]), train_reference(runs, [0, 1, 3])
    assert_close(batched, reference)
    assert not batched.diverged.any()


def test_chunks_trained_together_give_each_its_own_numbers_to_the_bit():
    """Chunks of other sizes (1 to 5 steps an epoch, the last ragged), other runs a stream (a
    chunk of part of its streams' runs), only squared runs in one and only Huber in another,
    in one step loop: each result is the one it gets alone, and comes back in the given order."""
    from study.engine import train_batched_together

    grid = Grid(
        num_train=[20, 33, 70, 150],
        lr=[0.01, 0.1],
        loss=["squared", "huber"],
        reduction=["mean", "sum"],
        noise_kind=["gaussian", "outliers"],
        epoch=[1, 3],
        replicates=3,
    )
    plan = Plan(grid, lambda *_: 10**6)
    chunks = [plan.chunk(spec) for spec in plan.specs]
    chunks[1] = chunks[1].take(np.flatnonzero(chunks[1].lr == 0.1))  # 4 runs a stream, not 8
    chunks[2] = chunks[2].take(np.flatnonzero(chunks[2].loss == "squared"))
    chunks[3] = chunks[3].take(np.flatnonzero(chunks[3].loss == "huber"))
    together = train_batched_together(chunks, [0, 1, 3])
    assert [len(r.w_hat) for r in together] == [len(c) for c in chunks]
    for chunk, result in zip(chunks, together):
        alone = train_batched(chunk, [0, 1, 3])
        for field in (*FIELDS, "steps", "ols_w", "ols_b"):
            np.testing.assert_array_equal(getattr(result, field), getattr(alone, field))


def test_chunks_trained_together_must_share_the_batch_size():
    from study.engine import train_batched_together

    chunks = [next(Plan(Grid(num_train=[20], batch_size=[b]), lambda *_: 10**6).chunks()) for b in (8, 16)]
    with pytest.raises(ValueError, match="share batch_size"):
        train_batched_together(chunks, [0, 1])


def test_train_batched_noise_free_recovers_w_and_b():
    runs = Grid(num_train=[1000], lr=[0.03], noise=[0.0], epoch=[10], replicates=3).runs()
    res = train_batched(runs, [0, 10])
    assert np.abs(res.w_hat[:, -1] - res.w_true).max() < 1e-4
    assert np.abs(res.b_hat[:, -1] - res.b_true).max() < 1e-4
    assert np.abs(res.ols_w - res.w_true).max() < 1e-5


@pytest.mark.parametrize("stream", STREAMS)
def test_train_batched_divergence_is_isolated_bit_for_bit(stream):
    calm = Grid(
        num_train=[64], lr=[0.01, 0.03, 0.1], loss=["squared", "huber"], epoch=[1, 3], replicates=2, stream=stream
    ).runs()
    wild = Grid(num_train=[64], lr=[50.0], epoch=[1, 3], replicates=2, stream=stream).runs()
    alone = train_batched(calm, [0, 1, 3])
    mixed = train_batched(calm[:5] + wild + calm[5:], [0, 1, 3])
    keep = [i for i in range(len(calm) + len(wild)) if not (5 <= i < 5 + len(wild))]
    assert mixed.diverged[5 : 5 + len(wild), -1].all()
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(mixed, field)[keep], getattr(alone, field))


def assert_chunking_changes_nothing(runs, checkpoints, sizes, device="cpu"):
    """The runs trained whole, and cut into consecutive chunks of each size: the same bits."""
    whole = train_batched(runs, checkpoints, device=device)
    for size in sizes:
        parts = [train_batched(runs[i : i + size], checkpoints, device=device) for i in range(0, len(runs), size)]
        for field in (*FIELDS, "ols_w", "ols_b"):
            np.testing.assert_array_equal(np.concatenate([getattr(p, field) for p in parts]), getattr(whole, field))


@pytest.mark.parametrize("stream", STREAMS)
def test_train_batched_chunking_changes_nothing(stream):
    runs = Grid(
        num_train=[50],
        lr=[0.01, 0.1],
        loss=["squared", "huber"],
        reduction=["mean", "sum"],
        noise_kind=["gaussian", "outliers"],
        epoch=[2, 3],
        replicates=3,
        stream=stream,
    ).runs()
    assert_chunking_changes_nothing(runs, [0, 2, 3], (1, 4, 7))


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_train_batched_chunking_changes_nothing_across_vector_widths(device):
    """Many streams, cut so that a run sits in a SIMD lane of a full vector in one chunk and in
    the scalar tail in another (4 to 33 streams a chunk): its numbers are the same bits."""
    runs = Grid(num_train=[40], lr=[0.01, 0.3], loss=["squared", "huber"], epoch=[1, 2], replicates=37).runs()
    assert_chunking_changes_nothing(runs, [0, 1, 2], (15, 36, 68, 132), device)


def test_streams_taken_in_slices_change_nothing():
    """Budgets so small that the second moments, a Huber checkpoint's sums and the drawing take
    one stream a slice: the bits of a single slice."""
    runs = Grid(
        num_train=[300],
        lr=[0.01, 0.1],
        loss=["squared", "huber"],
        noise_kind=["gaussian", "outliers"],
        epoch=[2],
        replicates=5,
    ).runs()
    # The tensor path's slices (the compiled loops, the default where Numba is, take none);
    # the compiled loops' bits are those of a single slice too.
    whole = train_batched(runs, [0, 1, 2], options=Options(compiled=False))
    tiny = Options(
        sum_budget_cpu=1, sum_budget_cuda=1, draw_budget_cpu=1, draw_budget_cuda=1, order_budget=1, compiled=False
    )
    sliced = train_batched(runs, [0, 1, 2], options=tiny)
    compiled = train_batched(runs, [0, 1, 2])
    for field in (*FIELDS, "ols_w", "ols_b"):
        np.testing.assert_array_equal(getattr(sliced, field), getattr(whole, field))
        np.testing.assert_array_equal(getattr(compiled, field), getattr(whole, field))


def test_train_batched_common_random_numbers_share_start_and_data():
    runs = Grid(num_train=[40], lr=[0.01, 0.1], loss=["squared", "huber"], epoch=[1]).runs()
    res = train_batched(runs, [0, 1])
    assert len({r.seed for r in runs}) == 1
    assert (res.w_hat[:, 0] == res.w_hat[0, 0]).all() and (res.ols_w == res.ols_w[0]).all()
    assert len(np.unique(res.w_hat[:, 1, 0])) == len(runs)  # they then train differently


def test_train_batched_refuses_mixed_sizes():
    runs = Grid(num_train=[10, 20]).runs()
    with pytest.raises(ValueError, match="must share num_train"):
        train_batched(runs, [0, 1])


def test_train_batched_takes_a_planned_chunk_as_its_runs():
    """The columns of a Plan's chunk give the numbers of the same runs as Run objects."""
    grid = Grid(num_train=[20], lr=[0.01, 0.1], loss=["squared", "huber"], noise=[0.1, 1.0], epoch=[2], replicates=3)
    chunk = next(Plan(grid, lambda *_: 10**6).chunks())
    runs = [grid.runs()[i] for i in chunk.index]
    a, b = train_batched(chunk, [0, 2]), train_batched(runs, [0, 2])
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("stream", STREAMS)
def test_noise_free_counter_and_torch_streams_both_recover_w(stream):
    res = train_batched(Grid(num_train=[200], lr=[0.1], noise=[0.0], epoch=[30], stream=stream).runs(), [0, 30])
    assert np.abs(res.w_hat[:, -1] - res.w_true).max() < 1e-5


def test_max_chunk_runs_keeps_a_chunk_within_the_budget():
    k = max_chunk_runs(10_000, 1000, 2)
    assert k >= 64
    per_run = 4 * (2 + 2) * 11_000 * 4
    assert k * per_run <= CHUNK_MEMORY_BUDGET
    assert max_chunk_runs(10**9, 1000, 2) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("stream", STREAMS)
def test_train_batched_on_cuda_equals_cpu(stream):
    runs = [r for g in by_size(mixed_runs(stream)).values() for r in g if r.num_train == 33]
    on_gpu = train_batched(runs, CHECKPOINTS, device="cuda")
    on_cpu = train_batched(runs, CHECKPOINTS, device="cpu")
    assert_close(on_gpu, on_cpu, same_data=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_give_the_bits_of_the_steps_run_one_by_one(monkeypatch):
    """Epochs 2 to 4 replay one captured graph on data refilled each epoch (replayed stale
    data, or a step left out of the capture, would show); without graphs, the same bits."""
    replays = []

    class Counted(torch.cuda.CUDAGraph):
        def replay(self):
            replays.append(1)
            return super().replay()

    runs = Grid(num_train=[70], lr=[0.01, 0.3], loss=["squared", "huber"], epoch=[1, 4], replicates=5).runs()
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Counted)
    # The graphs replay the tensor path's steps (the Triton kernel, the default where Triton
    # is, needs none: an epoch is one launch)
    graphed = train_batched(runs, [0, 1, 2, 4], device="cuda", options=Options(compiled=False))
    assert len(replays) == 3
    eager = train_batched(runs, [0, 1, 2, 4], device="cuda", options=Options(compiled=False, cuda_graphs=False))
    assert len(replays) == 3
    for field in (*FIELDS, "ols_w", "ols_b"):
        np.testing.assert_array_equal(getattr(graphed, field), getattr(eager, field))


def test_past_stability_edge_follows_the_stated_rule():
    from study.engine import past_stability_edge

    # η·c·(1 + sqrt(3/b))² against 2: squared at lr 0.1, bs 32: 0.2 · 1.71 = 0.34, stable.
    assert not past_stability_edge(0.1, "squared", 1.0, "mean", 32, 1000)
    assert past_stability_edge(1.0, "squared", 1.0, "mean", 32, 1000)  # 2 · 1.71
    assert past_stability_edge(0.4, "squared", 1.0, "mean", 32, 5)  # a batch of 5: 0.8 · 3.15
    assert not past_stability_edge(0.4, "squared", 1.0, "mean", 32, 1000)  # 0.8 · 1.71
    assert past_stability_edge(0.05, "squared", 1.0, "sum", 32, 1000)  # η = 1.6
    assert not past_stability_edge(1.0, "huber", 2.0, "mean", 32, 1000)  # c = 1/2: 0.86
    assert past_stability_edge(1.0, "huber", 0.5, "mean", 32, 1000)


def optimizer_runs(stream: str = "counter", **more) -> list:
    """Every optimiser axis varied with the old ones: lr decay, momentum, weight decay and
    averaging (none, from the first step, from epoch 1), both losses and reductions, a ragged
    size; and one lr that diverges."""
    common = dict(
        num_train=[37],
        loss=["squared", "huber"],
        sigma=[0.5],
        lr_decay=[0.0, 0.5, 1.0],
        momentum=[0.0, 0.6],
        weight_decay=[0.0, 0.3],
        average_from=[None, 0, 1],
        epoch=[1, 2, 4],
        num_val=20,
        replicates=2,
        stream=stream,
        **more,
    )
    return [
        *Grid(lr=[0.03, 0.2], reduction=["mean"], **common).runs(),
        *Grid(lr=[0.003], reduction=["sum"], **common).runs(),
        *Grid(lr=[3.0], **{**common, "loss": ["squared"], "average_from": [None], "lr_decay": [0.0]}).runs(),
    ]


@pytest.mark.parametrize("stream", STREAMS)
def test_train_batched_equals_reference_on_the_optimisers_axes(stream):
    """The reference is torch.optim.SGD(momentum, weight decay on the weight), LambdaLR stepped
    each minibatch and AveragedModel; the batched engine equals it run for run."""
    runs = optimizer_runs(stream)
    batched, reference = train_batched(runs, CHECKPOINTS), train_reference(runs, CHECKPOINTS)
    assert_close(batched, reference)
    assert batched.diverged[:, -1].any()  # the diverging lr really diverged, and was matched


def test_the_optimisers_axes_at_their_defaults_are_plain_sgd_to_the_bit():
    """A grid that names the axes at their defaults trains the runs (and keys) of one that
    does not: stores written before the axes existed stay valid."""
    plain = Grid(num_train=[37], lr=[0.05], loss=["squared", "huber"], epoch=[1, 2], replicates=3)
    named = Grid(
        num_train=[37],
        lr=[0.05],
        loss=["squared", "huber"],
        epoch=[1, 2],
        replicates=3,
        lr_decay=[0.0],
        momentum=[0],
        weight_decay=[0.0],
        average_from=[None],
    )
    assert [r.key for r in plain.runs()] == [r.key for r in named.runs()]
    a, b = train_batched(plain.runs(), [0, 1, 2]), train_batched(named.runs(), [0, 1, 2])
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    other = Grid(num_train=[37], lr=[0.05], loss=["squared", "huber"], epoch=[1, 2], replicates=3, momentum=[0.5])
    assert not {r.key for r in other.runs()} & {r.key for r in plain.runs()}


def test_the_optimisers_axes_change_nothing_when_chunked():
    runs = Grid(
        num_train=[40],
        lr=[0.05],
        loss=["squared", "huber"],
        lr_decay=[0.0, 0.5],
        momentum=[0.0, 0.5],
        weight_decay=[0.0, 0.1],
        average_from=[None, 1],
        epoch=[1, 3],
        replicates=5,
    ).runs()
    assert_chunking_changes_nothing(runs, [0, 1, 3], (1, 16, 33))


def test_averaging_reports_the_mean_of_the_iterates_after_every_step():
    """With lr 0 nothing moves: the average is the start. With a learning rate, averaging from
    epoch k reports the last iterate at checkpoints up to k, and something else after."""
    checkpoints = [0, 1, 2, 3]
    base = dict(num_train=[40], epoch=[1, 2, 3], replicates=2, num_val=20)
    still = train_batched(Grid(lr=[1e-30], average_from=[0], **base).runs(), checkpoints)
    np.testing.assert_allclose(still.w_hat[:, -1], still.w_hat[:, 0], rtol=1e-6)
    runs = Grid(lr=[0.1], average_from=[None, 2], **base).runs()
    last, averaged = (train_batched([r for r in runs if r.average_from == a], checkpoints) for a in (None, 2))
    np.testing.assert_array_equal(averaged.w_hat[:, :3], last.w_hat[:, :3])  # epochs 0-2: the last iterate
    assert not np.array_equal(averaged.w_hat[:, 3], last.w_hat[:, 3])


def test_noise_free_averaged_and_decayed_sgd_recovers_w():
    """Without noise every iterate converges to w: so do their tail average and a decayed lr's
    iterates (p = 0.5: Σ lr_t diverges, so SGD still gets there)."""
    runs = Grid(
        num_train=[200],
        lr=[0.1],
        noise=[0.0],
        lr_decay=[0.0, 0.5],
        momentum=[0.5],
        average_from=[None, 20],
        weight_decay=[0.0],
        epoch=[40],
        num_val=20,
    ).runs()
    result = train_batched(runs, [0, 40])
    np.testing.assert_allclose(result.w_hat[:, -1], np.tile([[2.0, -3.4]], (4, 1)), atol=5e-5)
    np.testing.assert_allclose(result.b_hat[:, -1], 4.2, atol=5e-5)


@pytest.mark.parametrize("stream", STREAMS)
def test_drop_last_equals_the_reference_and_changes_nothing_where_no_minibatch_is_ragged(stream):
    """drop_last as DataLoader's: 37 examples in minibatches of 8 take 4 steps an epoch, not 5;
    5 examples take none; 64 are cut into full minibatches either way, to the same bits. Runs
    with and without it share their data and order (they are paired)."""
    grid = Grid(
        num_train=[5, 37, 64],
        batch_size=[8],
        drop_last=[False, True],
        lr=[0.05],
        loss=["squared", "huber"],
        epoch=[1, 3],
        replicates=2,
        num_val=10,
        stream=stream,
    )
    groups = {}
    for run in grid.runs():
        groups.setdefault((run.num_train, run.drop_last), []).append(run)
    results = {}
    for (n, drop), runs in groups.items():
        results[n, drop] = batched = train_batched(runs, [0, 1, 3])
        assert_close(batched, train_reference(runs, [0, 1, 3]))
        per_epoch = n // 8 if drop else -(-n // 8)
        assert list(batched.steps) == [0, per_epoch, 3 * per_epoch]
    np.testing.assert_array_equal(results[5, True].w_hat[:, -1], results[5, True].w_hat[:, 0])  # no step taken
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(results[64, True], field), getattr(results[64, False], field))
    assert not np.array_equal(results[37, True].w_hat, results[37, False].w_hat)
    np.testing.assert_array_equal(results[37, True].ols_w, results[37, False].ols_w)  # the same data


@pytest.mark.parametrize("stream", STREAMS)
def test_train_batched_equals_reference_across_num_inputs(stream):
    """num_inputs as an axis (w one number repeated d times): one feature, a dozen, and d2l
    §3.7's 200 features on 20 examples, with weight decay, momentum and averaging; run for run
    (at d = 200 below the stability edge: past it, rounding is amplified, see past_stability_edge)."""
    for d, n, lrs in ((1, 37, [0.01, 0.1]), (12, 37, [0.01, 0.1]), (200, 20, [0.003, 0.01])):
        runs = Grid(
            num_train=[n],
            num_inputs=[d],
            w=0.01,
            b=0.05,
            lr=lrs,
            loss=["squared", "huber"],
            sigma=[0.5],
            weight_decay=[0.0, 3.0],
            momentum=[0.0, 0.5],
            average_from=[None, 1],
            batch_size=[5],
            epoch=[1, 2, 4],
            num_val=20,
            replicates=2,
            stream=stream,
        ).runs()
        assert {len(r.w) for r in runs} == {d} and runs[0].w == (0.01,) * d
        assert_close(train_batched(runs, CHECKPOINTS), train_reference(runs, CHECKPOINTS))


def test_noise_free_runs_of_many_features_recover_w():
    runs = Grid(
        num_train=[400], num_inputs=[20], w=0.5, lr=[0.1], noise=[0.0], epoch=[100], num_val=10, replicates=2
    ).runs()
    result = train_batched(runs, [0, 100])
    np.testing.assert_allclose(result.w_hat[:, -1], 0.5, atol=1e-5)
    np.testing.assert_allclose(result.b_hat[:, -1], 4.2, atol=1e-5)


def test_many_features_sum_by_a_tree_and_change_nothing_when_chunked():
    """Past CHAIN_FEATURES, a residual sums its products by a tree over the features: still
    elementwise, so a run's bits do not depend on its chunk."""
    CHAIN_FEATURES = Options().chain_features

    runs = Grid(
        num_train=[30],
        num_inputs=[CHAIN_FEATURES + 24],
        w=0.1,
        lr=[0.005, 0.01],
        loss=["squared", "huber"],
        weight_decay=[0.0, 1.0],
        batch_size=[5],
        epoch=[1, 3],
        num_val=10,
        replicates=4,
    ).runs()
    assert_chunking_changes_nothing(runs, [0, 1, 3], (1, 8, 33))
