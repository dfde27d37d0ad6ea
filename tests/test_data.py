from __future__ import annotations

import pytest
import torch

from study.data import OUTLIER_FRACTION, SyntheticRegressionData


def make(**kw):
    args = dict(w=[2, -3.4], b=4.2, seed=0)
    args.update(kw)
    return SyntheticRegressionData(**args)


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
    a = SyntheticRegressionData(w=[1.0], b=0.0)
    torch.manual_seed(3)
    b = SyntheticRegressionData(w=[1.0], b=0.0)
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
    ],
)
def test_data_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        make(**kw)
