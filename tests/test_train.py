from __future__ import annotations

import math

import pytest
import torch

from study import streams
from study.data import SyntheticRegressionData
from study.model import LinearRegression
from study.train import Trainer


def fit(seed=0, lr=0.03, epochs=3, **data_kw):
    kw = dict(w=[2, -3.4], b=4.2, seed=seed)
    kw.update(data_kw)
    data = SyntheticRegressionData(**kw)
    model = LinearRegression(lr=lr)
    trainer = Trainer(max_epochs=epochs).fit(model, data)
    return model, data, trainer


def test_trainer_noise_free_data_recovers_w_and_b():
    model, data, trainer = fit(lr=0.03, epochs=10, noise=0.0)
    w, b = model.get_w_b()
    assert (w.reshape(-1) - data.w).abs().max() < 1e-4
    assert abs(b.item() - data.b) < 1e-4
    assert trainer.history[-1].grad_w.abs().max() < 1e-4


def test_trainer_the_seeds_example_gives_errors_of_the_seeds_order():
    model, data, _ = fit(lr=0.03, epochs=3)  # the seed's own example
    w, b = model.get_w_b()
    assert 1e-4 < (w.reshape(-1) - data.w).norm() < 0.1
    assert abs(b.item() - data.b) < 0.1


def test_trainer_records_start_and_every_epoch_with_step_counts():
    _, data, trainer = fit(epochs=4, num_train=33, batch_size=32)
    assert [c.epoch for c in trainer.history] == [0, 1, 2, 3, 4]
    assert [c.steps for c in trainer.history] == [0, 2, 4, 6, 8]  # ragged last minibatch: 32 + 1
    start = trainer.history[0]
    assert start.b_hat == 0.0 and start.w_hat.abs().max() < 0.05
    assert trainer.history[-1].train_loss < start.train_loss


def test_trainer_same_seed_same_trajectory_different_seed_differs():
    _, _, a = fit(seed=11)
    _, _, b = fit(seed=11)
    _, _, c = fit(seed=12)
    for ca, cb in zip(a.history, b.history):
        assert torch.equal(ca.w_hat, cb.w_hat) and ca.b_hat == cb.b_hat and ca.train_loss == cb.train_loss
    assert not torch.equal(a.history[-1].w_hat, c.history[-1].w_hat)


@pytest.mark.parametrize("stream", ["torch", "counter"])
def test_trainer_matches_a_hand_written_loop_and_leaves_the_last_minibatch_gradient(stream):
    """An independent statement of the method: fresh shuffle per epoch, ragged last batch, the
    start and the orders read from the data set's stream as documented in study.data."""
    model, _, _ = fit(seed=3, lr=0.1, epochs=2, num_train=50, batch_size=16, stream=stream)
    data = SyntheticRegressionData(w=[2, -3.4], b=4.2, seed=3, num_train=50, batch_size=16, stream=stream)
    if stream == "torch":
        gen = data.generator
        w = torch.normal(0.0, 0.01, size=(1, 2), generator=gen)
        orders = [torch.randperm(50, generator=gen) for _ in range(2)]
    else:
        seeds = torch.tensor([3])
        w = 0.01 * streams.normals(seeds, "init", 2)
        orders = [streams.permutations(seeds, 50, epoch)[0] for epoch in (1, 2)]
    w = w.clone().requires_grad_()
    b = torch.zeros(1, requires_grad=True)
    for order in orders:
        for idx in torch.split(order, 16):
            w.grad = b.grad = None
            loss = ((data.X_train[idx] @ w.T + b - data.y_train[idx]) ** 2).mean()
            loss.backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                b -= 0.1 * b.grad
    assert torch.allclose(model.net.weight.detach(), w.detach(), atol=1e-6)
    assert torch.allclose(model.net.bias.detach(), b.detach(), atol=1e-6)
    assert torch.allclose(model.net.weight.grad, w.grad, atol=1e-6)  # the last minibatch (2 examples)


def test_trainer_full_batch_gradient_is_the_gradient_of_the_mean_training_loss():
    _, data, trainer = fit(epochs=1, num_train=40)
    c = trainer.history[1]
    w = c.w_hat.clone().requires_grad_()
    b = torch.tensor(c.b_hat, requires_grad=True)
    objective = ((data.X_train @ w + b - data.y_train[:, 0]) ** 2).mean()
    objective.backward()
    assert objective.item() == pytest.approx(c.train_loss, rel=1e-5)
    assert torch.allclose(w.grad, c.grad_w, atol=1e-5) and b.grad.item() == pytest.approx(c.grad_b, abs=1e-5)
    val = ((data.X_val @ c.w_hat + c.b_hat - data.y_val[:, 0]) ** 2).mean().item()
    assert val == pytest.approx(c.val_mse, rel=1e-5)


def test_trainer_a_diverging_lr_gives_non_finite_values_not_a_crash():
    _, _, trainer = fit(lr=10.0, epochs=3)
    last = trainer.history[-1]
    assert not math.isfinite(last.train_loss) or not torch.isfinite(last.w_hat).all()


def test_trainer_bad_max_epochs():
    with pytest.raises(ValueError, match=r"The 'max_epochs' parameter of Trainer must be an integer >= 0\. Got -1"):
        Trainer(max_epochs=-1)
