from __future__ import annotations

import torch

from study.data import SyntheticRegressionData
from study.theory import least_squares


def test_least_squares_recovers_noise_free_parameters():
    data = SyntheticRegressionData(w=[2, -3.4, 0.5], b=4.2, noise=0.0, num_train=50, seed=0)
    w, b = least_squares(data.X_train, data.y_train)
    assert w.dtype == torch.float64
    assert (w - data.w.double()).abs().max() < 1e-5 and abs(b.item() - 4.2) < 1e-5


def test_least_squares_error_shrinks_with_data():
    errs = []
    for n in (20, 2000):
        data = SyntheticRegressionData(w=[2, -3.4], b=4.2, noise=0.1, num_train=n, seed=1)
        w, _ = least_squares(data.X_train, data.y_train)
        errs.append((w - data.w.double()).norm().item())
    assert errs[1] < errs[0] / 3


def test_least_squares_underdetermined_is_the_minimum_norm_exact_fit():
    X, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])
    w, b = least_squares(X, y)
    coef = torch.cat([w, b[None]])
    assert torch.allclose(torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64) @ coef, torch.tensor(3.0, dtype=torch.float64))
    assert torch.allclose(coef, torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64))  # pinv solution


def test_least_squares_batched_equals_one_at_a_time():
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(4, 30, 2, generator=gen), torch.randn(4, 30, 1, generator=gen)
    w, b = least_squares(X, y)
    for s in range(4):
        ws, bs = least_squares(X[s], y[s])
        assert torch.allclose(w[s], ws) and torch.allclose(b[s], bs)
