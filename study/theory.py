"""Closed-form least squares on the same training data: the floor any method can reach.

The fit is solved in float64 so that it is a reference, not a second source of rounding error.
With fewer examples than unknowns (num_train < d + 1) it is the minimum-norm solution.
"""

from __future__ import annotations

import torch

__all__ = ["least_squares"]


def least_squares(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares weights and intercept of y ≈ Xw + b.

    Parameters
    ----------
    X : tensor of shape (n, d) or (S, n, d)
    y : tensor of shape (n,), (n, 1), (S, n) or (S, n, 1)

    Returns
    -------
    w_hat : float64 tensor of shape (d,) or (S, d)
    b_hat : float64 tensor of shape () or (S,)
    """
    X = X.detach().to("cpu", torch.float64)
    y = y.detach().to("cpu", torch.float64).reshape(*X.shape[:-1], 1)
    design = torch.cat([X, torch.ones_like(X[..., :1])], dim=-1)  # (..., n, d + 1)
    # gelsd (SVD) handles the rank-deficient case (n < d + 1) with the minimum-norm answer.
    coef = torch.linalg.lstsq(design, y, driver="gelsd").solution[..., 0]  # (..., d + 1)
    return coef[..., :-1], coef[..., -1]
