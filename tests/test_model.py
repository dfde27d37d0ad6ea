from __future__ import annotations

import pytest
import torch
from torch import nn

from study.data import INIT_STD, SyntheticRegressionData
from study.model import LinearRegression, per_example_loss
from study.train import Trainer


def eq_351(r: torch.Tensor, sigma: float) -> torch.Tensor:
    """Equation (3.5.1), written out as the book has it."""
    a = r.abs()
    return torch.where(a > sigma, a - sigma / 2, r**2 / (2 * sigma))


def test_model_start_is_n0_001_and_zero_bias_over_many_seeds():
    weights, biases = [], []
    for seed in range(300):
        model = LinearRegression(lr=0.03)
        data = SyntheticRegressionData(w=[2, -3.4, 1.0, 0.5], b=4.2, num_train=10, num_val=1, seed=seed)
        Trainer(max_epochs=0).fit(model, data)  # the real path: initialize, then train 0 epochs
        w, b = model.get_w_b()
        weights.append(w.reshape(-1))
        biases.append(b)
    weights = torch.cat(weights)
    assert 0.008 <= weights.std().item() <= 0.012
    assert abs(weights.mean().item()) < 0.002
    assert torch.all(torch.cat(biases) == 0)


def test_model_the_books_initialization_is_undone_by_lazylinear():
    """The pitfall this project guards against: normal_() on an unmaterialized LazyLinear."""
    torch.manual_seed(0)
    net = nn.LazyLinear(1)
    net.weight.data.normal_(0, 0.01)  # the seed's lines, on a layer with no storage yet
    net.bias.data.fill_(0)
    net(torch.zeros(1, 2))  # the first forward pass materializes and re-initializes
    assert net.bias.item() != 0
    assert net.weight.abs().max().item() > 0.05  # Kaiming uniform, bound 1/sqrt(2): not N(0, 0.01²)


def test_model_initialize_materializes_then_draws_from_the_generator():
    model = LinearRegression(lr=0.1)
    assert not model.initialized
    model.initialize(3, torch.Generator().manual_seed(5))
    w1 = model.net.weight.detach().clone()
    model.initialize(3, torch.Generator().manual_seed(5))
    assert model.initialized and torch.equal(model.net.weight.detach(), w1)
    assert model.net.weight.shape == (1, 3) and model.net.bias.item() == 0.0
    assert w1.abs().max() < 6 * INIT_STD


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_model_huber_equals_eq_3_5_1_pointwise(sigma):
    r = torch.tensor([-3 * sigma, -sigma, -sigma * 0.999, -0.1, 0.0, 0.3 * sigma, sigma, sigma * 1.001, 4 * sigma])
    model = LinearRegression(lr=0.1, loss="huber", sigma=sigma, reduction="sum")
    y = torch.zeros(len(r), 1)
    for i in range(len(r)):  # each example alone: the model's loss is exactly l(r_i)
        got = model.loss(r[i : i + 1, None], y[i : i + 1])
        assert torch.allclose(got, eq_351(r[i : i + 1], sigma).sum(), atol=1e-7), (r[i], sigma)
    assert torch.allclose(per_example_loss(r, "huber", sigma), eq_351(r, sigma), atol=1e-7)
    # continuity at |r| = σ: both branches give σ/2
    assert torch.allclose(eq_351(torch.tensor([sigma]), sigma), torch.tensor([sigma / 2]))


def test_model_huber_gradient_is_bounded_by_one_per_example():
    sigma = 0.5
    r = torch.linspace(-20, 20, 401, requires_grad=True)
    model = LinearRegression(lr=0.1, loss="huber", sigma=sigma, reduction="sum")
    model.loss(r[:, None], torch.zeros(401, 1)).backward()
    assert r.grad.abs().max().item() == pytest.approx(1.0)
    inside = r.detach().abs() < sigma
    assert torch.allclose(r.grad[inside], r.detach()[inside] / sigma)


def test_model_squared_is_mse_without_half():
    model = LinearRegression(lr=0.1)
    y_hat, y = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [0.0]])
    assert model.loss(y_hat, y).item() == pytest.approx(5.0)


@pytest.mark.parametrize("loss", ["squared", "huber"])
def test_model_sum_gradient_is_batch_size_times_mean_gradient(loss):
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(32, 2, generator=gen), torch.randn(32, 1, generator=gen) * 3
    grads = {}
    for reduction in ("mean", "sum"):
        model = LinearRegression(lr=0.1, loss=loss, reduction=reduction)
        model.initialize(2, torch.Generator().manual_seed(1))
        model.loss(model(X), y).backward()
        grads[reduction] = (model.net.weight.grad.clone(), model.net.bias.grad.clone())
    assert torch.allclose(grads["sum"][0], 32 * grads["mean"][0], rtol=1e-5)
    assert torch.allclose(grads["sum"][1], 32 * grads["mean"][1], rtol=1e-5)


def test_model_configure_optimizers_is_sgd_with_lr():
    model = LinearRegression(lr=0.07)
    model.initialize(2)
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 0.07


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lr=0), r"The 'lr' parameter of LinearRegression must be a finite number > 0\. Got 0 instead\."),
        (dict(lr=-0.1), r"'lr' .* Got -0\.1 instead"),
        (dict(lr=float("inf")), r"'lr' .* Got inf instead"),
        (dict(lr=float("nan")), r"'lr' .* Got nan instead"),
        (dict(lr=0.1, loss="hubber"), r"'loss' .* one of \['squared', 'huber'\]\. Got 'hubber'"),
        (dict(lr=0.1, reduction="max"), r"'reduction' .* one of \['mean', 'sum'\]\. Got 'max'"),
        (dict(lr=0.1, sigma=0), r"'sigma' .* a finite number > 0\. Got 0"),
    ],
)
def test_model_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        LinearRegression(**kw)
