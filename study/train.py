"""The reference training loop: one run at a time, plainly, as the book trains.

This loop is the readable statement of the method and the oracle that the batched engine
(``study.engine``) is tested against. Keep it plain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from ._checks import check_int, check_real
from .data import SyntheticRegressionData
from .model import LinearRegression, per_example_loss

__all__ = ["Trainer"]


@dataclass
class Checkpoint:
    """The state of a run after ``epoch`` epochs (epoch 0 is the start)."""

    epoch: int
    w_hat: torch.Tensor  # (d,)
    b_hat: float
    train_loss: float  # mean per-example training loss, for `sum` runs too, so columns compare
    val_mse: float
    grad_w: torch.Tensor  # (d,) full-batch gradient of train_loss
    grad_b: float
    steps: int  # SGD updates so far


class Trainer:
    """Minibatch SGD for ``max_epochs`` epochs, a fresh shuffle every epoch.

    ``fit`` takes the model's initial weight from the data's stream (unless the model was
    initialized already), then one permutation per epoch, and records a :class:`Checkpoint`
    at the start and after every epoch in ``history``. After ``fit``,
    ``model.net.weight.grad`` holds the gradient of the last minibatch, as PyTorch leaves it.

    ``lr_decay`` p > 0 steps a ``LambdaLR`` after every minibatch: lr_t = lr·(1 + t)^−p after t
    steps. ``average_from`` k reports, from epoch k + 1 on, the ``AveragedModel`` updated after
    every step of the epochs after the k-th (its checkpoint is the averaged model's); None
    reports the model itself. ``drop_last`` drops each epoch's ragged last minibatch, as
    ``DataLoader(drop_last=True)``.
    """

    def __init__(
        self, max_epochs: int, lr_decay: float = 0.0, average_from: int | None = None, drop_last: bool = False
    ) -> None:
        where = "parameter of Trainer"
        self.max_epochs = check_int(max_epochs, "max_epochs", where, low=0)
        self.lr_decay = check_real(lr_decay, "lr_decay", where, strict=False)
        self.average_from = None if average_from is None else check_int(average_from, "average_from", where, low=0)
        self.drop_last = bool(drop_last)
        self.history: list[Checkpoint] = []

    def fit(self, model: LinearRegression, data: SyntheticRegressionData) -> Trainer:
        if not model.initialized:
            model.initialize(data.num_inputs, weight=data.initial_weight())
        optimizer = model.configure_optimizers()
        p = self.lr_decay
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (1 + t) ** -p) if p else None
        averaged = None if self.average_from is None else torch.optim.swa_utils.AveragedModel(model)
        X, y = data.X_train, data.y_train
        steps = 0
        self.history = [self._checkpoint(model, data, 0, steps)]
        for epoch in range(1, self.max_epochs + 1):
            order = data.permutation()
            # averaged is made exactly when average_from is given (the checks narrow both for mypy)
            averaging = averaged is not None and self.average_from is not None and epoch > self.average_from
            used = data.num_train - data.num_train % data.batch_size if self.drop_last else data.num_train
            for start in range(0, used, data.batch_size):
                idx = order[start : start + data.batch_size]  # the last minibatch may be ragged
                loss = model.loss(model(X[idx]), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
                if scheduler is not None:
                    scheduler.step()
                if averaged is not None and averaging:
                    averaged.update_parameters(model)
            # AveragedModel keeps a deep copy of the LinearRegression it was given (torch types it a Module)
            reported = cast(LinearRegression, averaged.module) if averaged is not None and averaging else model
            self.history.append(self._checkpoint(reported, data, epoch, steps))
        return self

    @staticmethod
    def _checkpoint(model: LinearRegression, data: SyntheticRegressionData, epoch: int, steps: int) -> Checkpoint:
        w, b = model.net.weight, model.net.bias
        residual = model(data.X_train) - data.y_train
        objective = per_example_loss(residual, model.loss_name, model.sigma).mean()
        # autograd.grad, not backward(): the minibatch gradient in .grad stays as SGD left it.
        grad_w, grad_b = torch.autograd.grad(objective, (w, b))
        with torch.no_grad():
            val_mse = (model(data.X_val) - data.y_val).square().mean()
        return Checkpoint(
            epoch=epoch,
            w_hat=w.detach().reshape(-1).clone(),
            b_hat=float(b.detach()),
            train_loss=float(objective.detach()),
            val_mse=float(val_mse),
            grad_w=grad_w.reshape(-1),
            grad_b=float(grad_b),
            steps=steps,
        )
