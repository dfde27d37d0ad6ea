"""Closed-form least squares on the same training data: the floor any method can reach.

The fit is solved in float64 so that it is a reference, not a second source of rounding error,
on the data's own device: through the normal equations, (AᵀA)⁺ Aᵀy with A = [X, 1], which for
the well-conditioned Gaussian designs here is accurate to about 1e-12 and costs one pass over
the data, where an SVD of every data set would cost more than training on a GPU. With fewer
examples than unknowns (num_train < d + 1) the pseudo-inverse gives the minimum-norm solution.
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
    X = X.detach().to(torch.float64)
    y = y.detach().to(torch.float64).reshape(*X.shape[:-1], 1)
    design = torch.cat([X, torch.ones_like(X[..., :1])], dim=-1)  # (..., n, d + 1)
    # Sums of products, not matmuls: a batched matmul picks its kernel (and rounding) by the
    # batch's shape, and a data set's fit must not depend on the others beside it.
    cols = design.unbind(-1)
    k = len(cols)
    gram = torch.stack([torch.stack([(cols[i] * cols[j]).sum(-1) for j in range(k)], -1) for i in range(k)], -2)
    moment = torch.stack([(c * y[..., 0]).sum(-1) for c in cols], -1)[..., None]  # (..., d + 1, 1)
    # pinv, not solve: a rank-deficient Gram (n < d + 1) gets the minimum-norm answer.
    coef = (torch.linalg.pinv(gram, hermitian=True) @ moment)[..., 0]  # (..., d + 1)
    return coef[..., :-1].cpu(), coef[..., -1].cpu()
