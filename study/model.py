"""The concise linear-regression model of d2l section 3.5, with its initialization done right.

In the book, ``self.net.weight.data.normal_(0, 0.01)`` runs on an *uninitialized* LazyLinear:
the first forward pass materializes the layer and re-initializes it (Kaiming uniform, non-zero
bias), silently undoing the N(0, 0.01²) start. Here the layer is materialized first and then
initialized, from the run's own generator.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_int, check_real
from .data import INIT_STD
from .errors import ParameterError
from .vocabulary import LOSSES, REDUCTIONS

__all__ = ["LinearRegression"]


def draw_initial_weight(num_inputs: int, generator: torch.Generator | None) -> torch.Tensor:
    """The starting weight (1, d) ~ N(0, INIT_STD²); the bias starts at exactly 0."""
    return torch.normal(0.0, INIT_STD, size=(1, num_inputs), generator=generator)


def per_example_loss(residual: torch.Tensor, loss: str, sigma: float) -> torch.Tensor:
    """l(r) for r = ŷ − y: r² for ``squared`` (MSELoss, no 1/2), eq. (3.5.1) for ``huber``."""
    if loss == "squared":
        return residual.square()
    a = residual.abs()
    return torch.where(a > sigma, a - sigma / 2, residual.square() / (2 * sigma))


class LinearRegression(nn.Module):
    """y = Xw + b with ``nn.LazyLinear(1)``, trained by minibatch SGD.

    Parameters
    ----------
    lr : float
        Learning rate of SGD, > 0.
    loss : {"squared", "huber"}, default="squared"
        ``squared`` is ``nn.MSELoss`` (no 1/2 factor); ``huber`` is equation (3.5.1),
        ``nn.SmoothL1Loss(beta=sigma)``.
    sigma : float, default=1.0
        Huber's threshold σ > 0 (unused by ``squared``).
    reduction : {"mean", "sum"}, default="mean"
        How the per-example losses of a minibatch are combined.
    momentum : float, default=0.0
        Heavy-ball momentum β of ``torch.optim.SGD`` (dampening 0, not Nesterov), in [0, 1).
    weight_decay : float, default=0.0
        λ >= 0, on the weight only, as d2l §3.7's concise implementation gives it: the bias is
        not decayed.
    """

    def __init__(
        self,
        lr: float,
        loss: str = "squared",
        sigma: float = 1.0,
        reduction: str = "mean",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        where = "parameter of LinearRegression"
        self.lr = check_real(lr, "lr", where)
        self.loss_name = check_choice(loss, "loss", where, LOSSES)
        self.sigma = check_real(sigma, "sigma", where)
        self.reduction = check_choice(reduction, "reduction", where, REDUCTIONS)
        self.momentum = check_real(momentum, "momentum", where, strict=False)
        if self.momentum >= 1:
            raise ParameterError("momentum", where, "a number from 0 up to, not including, 1", momentum)
        self.weight_decay = check_real(weight_decay, "weight_decay", where, strict=False)
        self.net = nn.LazyLinear(1)

    @property
    def initialized(self) -> bool:
        return not isinstance(self.net.weight, nn.parameter.UninitializedParameter)

    @torch.no_grad()
    def initialize(
        self, num_inputs: int, generator: torch.Generator | None = None, weight: torch.Tensor | None = None
    ) -> None:
        """Materialize the lazy layer for d inputs, then set the weight and a bias of 0. The
        weight is ``weight`` (1, d) when given (a data set's ``initial_weight()``), else drawn
        from N(0, 0.01²) with ``generator``."""
        check_int(num_inputs, "num_inputs", "parameter of LinearRegression.initialize", low=1)
        if not self.initialized:
            self.net(torch.zeros(1, num_inputs))  # materializes (and Kaiming-initializes) the layer
        self.net.weight.copy_(draw_initial_weight(num_inputs, generator) if weight is None else weight)
        self.net.bias.zero_()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)

    def loss(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fn: nn.MSELoss | nn.SmoothL1Loss
        if self.loss_name == "squared":
            fn = nn.MSELoss(reduction=self.reduction)
        else:
            fn = nn.SmoothL1Loss(reduction=self.reduction, beta=self.sigma)
        return fn(y_hat, y)

    def configure_optimizers(self) -> torch.optim.SGD:
        if not self.momentum and not self.weight_decay:
            return torch.optim.SGD(self.parameters(), self.lr)
        # d2l §3.7: weight decay on the weight, none on the bias.
        groups: list[dict[str, Any]] = [
            {"params": self.net.weight, "weight_decay": self.weight_decay},
            {"params": self.net.bias},
        ]
        return torch.optim.SGD(
            groups,
            lr=self.lr,
            momentum=self.momentum,
        )

    def get_w_b(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.weight.data, self.net.bias.data
