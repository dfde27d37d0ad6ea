from __future__ import annotations

import pytest
import torch

from study.data import OUTLIER_FRACTION, SyntheticRegressionData

STREAM = "counter"


@pytest.fixture(autouse=True, params=["counter", "torch"])
def stream(request, monkeypatch):
    """Every property below holds for both streams."""
    monkeypatch.setitem(globals(), "STREAM", request.param)
    return request.param


def make(**kw):
    args = dict(w=[2, -3.4], b=4.2, seed=0, stream=STREAM)
    args.update(kw)
    data = SyntheticRegressionData(**args)
    assert data.stream == args["stream"]
    return data


def test_data_shapes_and_split():
    data = make(num_train=30, num_val=20)
    assert data.X.shape == (50, 2) and data.y.shape == (50, 1)
    assert data.X_train.shape == (30, 2) and data.X_val.shape == (20, 2)
    assert torch.equal(torch.cat([data.X_train, data.X_val]), data.X)


def test_data_labels_follow_the_model_with_the_noise_scale():
    data = make(num_train=5000, num_val=5000, noise=0.5)
    residual = data.y[:, 0] - (data.X @ data.w + data.b)
    assert abs(residual.std().item() - 0.5) < 0.02
    assert abs(residual.mean().item()) < 0.02
    clean = make(noise=0.0)
    assert torch.allclose(clean.y[:, 0], clean.X @ clean.w + clean.b, atol=1e-6)


def test_data_same_seed_same_data_and_permutations():
    a, b = make(seed=7), make(seed=7)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    assert torch.equal(a.permutation(), b.permutation())
    c = make(seed=8)
    assert not torch.equal(a.X, c.X)


def test_data_permutation_is_a_fresh_shuffle_each_epoch():
    data = make(num_train=100)
    p1, p2 = data.permutation(), data.permutation()
    assert sorted(p1.tolist()) == list(range(100)) and not torch.equal(p1, p2)


def test_data_unseeded_follows_torch_manual_seed():
    torch.manual_seed(3)
    a = SyntheticRegressionData(w=[1.0], b=0.0, stream=STREAM)
    torch.manual_seed(3)
    b = SyntheticRegressionData(w=[1.0], b=0.0, stream=STREAM)
    assert a.seed == b.seed and torch.equal(a.X, b.X)


def test_data_student_t_has_heavier_tails_than_gaussian():
    g = make(num_train=20000, num_val=1, noise=1.0)
    t = make(num_train=20000, num_val=1, noise=1.0, noise_kind="student_t")
    rg = (g.y_train[:, 0] - g.X_train @ g.w - g.b).abs()
    rt = (t.y_train[:, 0] - t.X_train @ t.w - t.b).abs()
    assert (rt > 5).float().mean() > 10 * (rg > 5).float().mean()


def test_data_outliers_hit_a_fraction_of_training_labels_only():
    data = make(num_train=20000, num_val=5000, noise=0.01, noise_kind="outliers")
    r = (data.y[:, 0] - data.X @ data.w - data.b).abs()
    hit = (r[: data.num_train] > 0.1).float().mean().item()
    assert abs(hit - OUTLIER_FRACTION) < 0.015
    assert r[data.num_train :].max() < 0.1


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_train=0), r"'num_train' parameter of SyntheticRegressionData must be an integer >= 1\. Got 0"),
        (dict(num_val=0), r"'num_val' .* an integer >= 1\. Got 0"),
        (dict(batch_size=0), r"'batch_size' .* an integer >= 1\. Got 0"),
        (dict(noise=-0.1), r"'noise' .* a finite number >= 0\. Got -0\.1"),
        (dict(noise_kind="cauchy"), r"'noise_kind' .* one of \['gaussian', 'student_t', 'outliers'\]\. Got 'cauchy'"),
        (dict(w=[]), r"'w' .* a non-empty list of finite numbers\. Got \[\]"),
        (dict(w=["a", 1]), r"'w' .* a non-empty list of finite numbers"),
        (dict(b=float("nan")), r"'b' .* a finite number"),
        (dict(seed=-1), r"'seed' .* an integer >= 0\. Got -1"),
        (dict(seed=2**63), r"'seed' .* an integer in \[0, 2\*\*63\)\. Got 9223372036854775808"),
        (dict(stream="numpy"), r"'stream' .* one of \['counter', 'torch'\]\. Got 'numpy'"),
    ],
)
def test_data_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        make(**kw)


def test_data_counter_stream_is_the_batched_draw_of_its_seed():
    """SyntheticRegressionData(stream="counter") holds exactly draw_counter_data's row of its seed,
    drawn alone or beside other seeds, and its start and orders are the stream's."""
    from study import streams
    from study.data import counter_initial_weights, draw_counter_data

    data = make(seed=11, num_train=40, num_val=7, noise_kind="outliers", stream="counter")
    seeds = torch.tensor([5, 11, 2**62 + 3])
    X, y = draw_counter_data(seeds, data.w.float(), data.b, data.noise, "outliers", 40, 7)
    assert torch.equal(X[1], data.X) and torch.equal(y[1, :, None], data.y)
    assert torch.equal(counter_initial_weights(seeds, 2)[1:2], data.initial_weight())
    assert torch.equal(data.permutation(), streams.permutations(torch.tensor([11]), 40, 1)[0])
    assert torch.equal(data.permutation(), streams.permutations(torch.tensor([11]), 40, 2)[0])
