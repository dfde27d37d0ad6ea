"""The section's own example, as ``study demo`` prints it."""

from __future__ import annotations

import torch

from .. import theory
from ..data import SyntheticRegressionData
from ..model import LinearRegression
from ..train import Trainer


def seed_example(
    lr: float = 0.03, loss: str = "squared", epochs: int = 3, num_train: int = 1000, seed: int = 0
) -> dict:
    """The section's own example (``study demo``): w = [2, -3.4], b = 4.2, trained by the
    reference loop, and its errors as the book prints them (w − ŵ, b − b̂), beside least
    squares on the same data."""
    model = LinearRegression(lr=lr, loss=loss)
    data = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2, num_train=num_train, seed=seed)
    Trainer(max_epochs=epochs).fit(model, data)
    w, b = model.get_w_b()
    w_ols, b_ols = theory.least_squares(data.X_train, data.y_train)
    return {
        "w": data.w - w.reshape(data.w.shape),
        "b": data.b - b,
        "ols_w": (data.w.double() - w_ols).numpy(),
        "ols_b": data.b - float(b_ols),
    }
