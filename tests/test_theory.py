from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from study.data import OUTLIER_FRACTION, OUTLIER_SCALE, SyntheticRegressionData, draw_counter_data
from study.model import LinearRegression
from study.theory import (
    _betainc,
    _f_quantile,
    _lgamma,
    least_squares,
    noise_variance,
    ols_b_err_sq_mean,
    ols_w_err_norm_quantile,
    ols_w_err_sq_mean,
    sgd_momentum_effective_lr,
    sgd_momentum_stability_edge,
    sgd_momentum_stationary_b_err_sq,
    sgd_momentum_stationary_sq_error,
    sgd_momentum_stationary_w_err_sq,
    sgd_stability_edge,
    sgd_stationary_b_err_sq,
    sgd_stationary_sq_error,
    sgd_stationary_w_err_sq,
)


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
    assert torch.allclose(
        torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64) @ coef, torch.tensor(3.0, dtype=torch.float64)
    )
    assert torch.allclose(coef, torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64))  # pinv solution


def test_least_squares_batched_equals_one_at_a_time():
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(4, 30, 2, generator=gen), torch.randn(4, 30, 1, generator=gen)
    w, b = least_squares(X, y)
    for s in range(4):
        ws, bs = least_squares(X[s], y[s])
        assert torch.allclose(w[s], ws) and torch.allclose(b[s], bs)


# --------------------------------------------------------------------------------------------
# Closed-form expectations. Monte-Carlo checks are seeded and use a tolerance of 4 standard
# errors of the simulated quantity (estimated from the simulation itself unless said otherwise):
# a correct formula fails one with probability about 6e-5, and each test also shows that a
# plausible wrong formula (one degree of freedom off, the intercept treated as a Gaussian
# feature, the small-lr law) lies outside the same tolerance, so the tests can fail.


Z = 4.0  # standard errors of tolerance


def _within(estimate: float, se: float, value: float) -> bool:
    return abs(estimate - value) <= Z * se


# --- noise_variance -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["counter", "torch"])
@pytest.mark.parametrize("kind", ["gaussian", "outliers"])
def test_noise_variance_matches_the_generated_noise(kind, stream):
    # w = 0, b = 0: the training labels are the noise term itself.
    n, noise = 200_000, 0.5
    data = SyntheticRegressionData(
        w=[0.0], b=0.0, noise=noise, num_train=n, num_val=1, noise_kind=kind, seed=11, stream=stream
    )
    eps = data.y_train[:, 0].double().numpy()
    var = eps.var()
    se = math.sqrt((((eps - eps.mean()) ** 4).mean() - var**2) / n)  # SE of a sample variance
    assert _within(var, se, float(noise_variance(noise, kind)))
    assert not _within(var, se, noise**2) or kind == "gaussian"  # outliers' gross errors do count


@pytest.mark.parametrize("stream", ["counter", "torch"])
def test_noise_variance_student_t(stream):
    # t with 3 degrees of freedom has no fourth moment, so a sample variance has no standard
    # error and converges slowly, skewed to the right: in 400 simulated samples of 2e5 draws,
    # 99% of var/(3 noise²) fell in [0.94, 1.20]. So the variance is checked with a wide band,
    # [0.9, 1.3] at 1e6 draws (which refuses noise² and ν = 4's 2 noise²), and the law it comes
    # from, t_3 scaled by noise, is checked tightly through its CDF, known in closed form:
    # F(t) = 1/2 + (t / (√3 (1 + t²/3)) + arctan(t / √3)) / π, each point to 4 binomial SEs.
    n, noise = 1_000_000, 0.5
    data = SyntheticRegressionData(
        w=[0.0], b=0.0, noise=noise, num_train=n, num_val=1, noise_kind="student_t", seed=12, stream=stream
    )
    eps = data.y_train[:, 0].double().numpy()
    assert 0.9 <= eps.var() / float(noise_variance(noise, "student_t")) <= 1.3
    for t in (-3.0, -1.0, -0.3, 0.0, 0.5, 2.0, 5.0):
        cdf = 0.5 + (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3))) / math.pi
        assert abs((eps / noise <= t).mean() - cdf) <= Z * math.sqrt(cdf * (1 - cdf) / n)


def test_noise_variance_values_and_broadcasting():
    got = noise_variance(np.array([[0.1], [2.0]]), ["gaussian", "student_t", "outliers"])
    want = [[0.01, 0.03, 0.01 + OUTLIER_FRACTION * OUTLIER_SCALE**2], [4.0, 12.0, 4.0 + 10.0]]
    assert got.shape == (2, 3) and np.allclose(got, want)
    with pytest.raises(ValueError, match="'noise_kind' parameter of noise_variance must be one of"):
        noise_variance(1.0, "cauchy")
    with pytest.raises(ValueError, match="'noise' parameter of noise_variance must be a finite number >= 0"):
        noise_variance(-1.0)


# --- the F quantile, without SciPy ----------------------------------------------------------


def test_betainc_closed_forms():
    x = np.array([1e-6, 0.01, 0.3, 0.5, 0.77, 0.999])
    for a, b, want in [
        (2.5, 1.0, x**2.5),  # I_x(a, 1) = x^a
        (1.0, 7.0, 1 - (1 - x) ** 7),  # I_x(1, b) = 1 − (1 − x)^b
        (0.5, 0.5, 2 / np.pi * np.arcsin(np.sqrt(x))),  # the arcsine law
        (3.0, 2.0, 4 * x**3 - 3 * x**4),  # a binomial tail: P(Bin(4, x) >= 3)
    ]:
        log_beta = _lgamma(np.float64(a)) + _lgamma(np.float64(b)) - _lgamma(np.float64(a + b))
        got, _ = _betainc(np.float64(a), np.float64(b), x, 1 - x, log_beta)
        assert np.allclose(got, want, rtol=1e-12, atol=1e-15)


def test_f_quantile_closed_forms():
    q = np.array([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    # F(1, ν) = t_ν², so its q-quantile is t's (1 + q)/2-quantile squared: for ν = 1 (Cauchy)
    # tan(π q / 2)², for ν = 2 2q²/(1 − q²).
    assert np.allclose(_f_quantile(q, 1, 1), np.tan(np.pi * q / 2) ** 2, rtol=1e-10)
    assert np.allclose(_f_quantile(q, 1, 2), 2 * q**2 / (1 - q**2), rtol=1e-10)
    # F(2, ν): P(F <= f) = 1 − (1 + 2f/ν)^(−ν/2), so f_q = ν/2 ((1 − q)^(−2/ν) − 1).
    for nu in (1, 3, 18, 195, 10_000):
        assert np.allclose(_f_quantile(q, 2, nu), nu / 2 * ((1 - q) ** (-2 / nu) - 1), rtol=1e-9)
    # F(d, 2): P(F <= f) = x^(d/2) with x = d f/(d f + 2), so f_q = 2 r / (d (1 − r)), r = q^(2/d).
    for d in (1, 3, 5, 12):
        r = q ** (2 / d)
        assert np.allclose(_f_quantile(q, d, 2), 2 * r / (d * (1 - r)), rtol=1e-10)
    # 1/F(a, b) ~ F(b, a); and printed tables' values (F.95(3, 5), F.95(5, 10), F.99(3, 10)).
    assert np.allclose(_f_quantile(q, 3, 7), 1 / _f_quantile(1 - q, 7, 3), rtol=1e-10)
    assert np.allclose(_f_quantile([0.95, 0.95, 0.99], [3, 5, 3], [5, 10, 10]), [5.4095, 3.3258, 6.5523], rtol=1e-4)
    assert _f_quantile(0.0, 2, 5) == 0.0 and _f_quantile(1.0, 2, 5) == np.inf


def test_f_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    q = np.array([1e-4, 0.1, 0.5, 0.9, 0.999])[:, None, None]
    d1 = np.array([1, 2, 3, 5, 10, 40])[:, None]
    d2 = np.array([1, 2, 3, 7, 18, 195, 10_000])
    assert np.allclose(_f_quantile(q, d1, d2), stats.f.ppf(q, d1, d2), rtol=1e-9)


# --- least squares on Gaussian designs ------------------------------------------------------


def _ols_errors(num_train: int, d: int, reps: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """‖ŵ − w‖² and (b̂ − b)² of the project's least_squares on `reps` Gaussian data sets."""
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=d), 1.5
    w_sq, b_sq = [], []
    for start in range(0, reps, 10_000):  # slices bound the memory
        S = min(10_000, reps - start)
        X = rng.standard_normal((S, num_train, d))
        y = X @ w + b + noise * rng.standard_normal((S, num_train))
        w_hat, b_hat = least_squares(torch.from_numpy(X), torch.from_numpy(y))
        w_sq.append(((w_hat.numpy() - w) ** 2).sum(-1))
        b_sq.append((b_hat.numpy() - b) ** 2)
    return np.concatenate(w_sq), np.concatenate(b_sq)


@pytest.mark.parametrize("num_train, d, reps", [(20, 2, 50_000), (200, 5, 20_000)])
def test_ols_means_and_quantiles_match_monte_carlo(num_train, d, reps):
    noise = 0.5
    s2 = noise**2
    w_sq, b_sq = _ols_errors(num_train, d, reps, noise, seed=num_train)
    se = lambda v: v.std() / math.sqrt(len(v))  # noqa: E731
    assert _within(w_sq.mean(), se(w_sq), float(ols_w_err_sq_mean(num_train, d, s2)))
    assert _within(b_sq.mean(), se(b_sq), float(ols_b_err_sq_mean(num_train, d, s2)))
    # Quantiles: the fraction of runs below the predicted q-quantile is q, to a binomial SE.
    norm = np.sqrt(w_sq)
    for q in (0.1, 0.5, 0.9):
        tol = Z * math.sqrt(q * (1 - q) / reps)
        assert abs((norm <= ols_w_err_norm_quantile(q, num_train, d, s2)).mean() - q) <= tol
    if num_train == 20:  # refused: one degree of freedom off (w's mean and median), σ²/n for b
        assert not _within(w_sq.mean(), se(w_sq), s2 * d / (num_train - d - 1))
        assert not _within(b_sq.mean(), se(b_sq), s2 / num_train)
        wrong_median = noise * math.sqrt(d / (num_train - d - 1) * float(_f_quantile(0.5, d, num_train - d - 1)))
        assert abs((norm <= wrong_median).mean() - 0.5) > Z * math.sqrt(0.25 / reps)


def test_ols_mean_holds_for_outlier_noise_of_the_same_variance():
    # The means use nothing of the noise but its variance: data.py's own outlier noise (a 10%
    # chance of a N(0, 10²) gross error on top of N(0, noise²)) gives σ² d/(n − d − 2) with
    # σ² = noise_variance(noise, "outliers").
    num_train, d, reps, noise = 20, 2, 40_000, 0.5
    w = torch.tensor([2.0, -3.4])
    X, y = draw_counter_data(torch.arange(reps), w, 4.2, noise, "outliers", num_train, 1)
    w_hat, b_hat = least_squares(X[:, :num_train], y[:, :num_train])
    w_sq = ((w_hat - w.double()) ** 2).sum(-1).numpy()
    b_sq = ((b_hat - 4.2) ** 2).numpy()
    s2 = float(noise_variance(noise, "outliers"))
    assert _within(w_sq.mean(), w_sq.std() / math.sqrt(reps), float(ols_w_err_sq_mean(num_train, d, s2)))
    assert _within(b_sq.mean(), b_sq.std() / math.sqrt(reps), float(ols_b_err_sq_mean(num_train, d, s2)))


def test_ols_formulas_domain():
    d = 2
    n = np.arange(1, 8)
    w = ols_w_err_sq_mean(n, d, 1.0)
    assert np.isnan(w[:2]).all() and np.isinf(w[2:4]).all() and np.allclose(w[4:], 2 / (n[4:] - 4))
    assert np.isinf(ols_b_err_sq_mean(4, d, 1.0)) and np.isclose(ols_b_err_sq_mean(20, d, 1.0), 18 / (20 * 16))
    assert ols_w_err_sq_mean(10, d, 0.0) == 0.0
    quantiles = ols_w_err_norm_quantile([0.1, 0.5, 0.9], 3, d, 1.0)  # n = d + 1: F(2, 1), finite
    assert np.isfinite(quantiles).all() and (np.diff(quantiles) > 0).all()
    assert np.isnan(ols_w_err_norm_quantile(0.5, 2, d, 1.0))
    # the median is proportional to σ and shrinks as 1/√n
    assert np.isclose(ols_w_err_norm_quantile(0.5, 10_000, d, 4.0), 2 * ols_w_err_norm_quantile(0.5, 10_000, d, 1.0))
    ratio = ols_w_err_norm_quantile(0.5, 40_000, d, 1.0) / ols_w_err_norm_quantile(0.5, 10_000, d, 1.0)
    assert abs(ratio - 0.5) < 1e-3
    with pytest.raises(ValueError, match="'q' parameter of ols_w_err_norm_quantile must be a probability"):
        ols_w_err_norm_quantile(1.5, 20, 2, 1.0)
    with pytest.raises(ValueError, match="'d' parameter of ols_w_err_sq_mean must be an integer >= 1"):
        ols_w_err_sq_mean(20, 0, 1.0)
    with pytest.raises(ValueError, match="'num_train' parameter of ols_b_err_sq_mean must be an integer"):
        ols_b_err_sq_mean(20.5, 2, 1.0)


# --- online minibatch SGD -------------------------------------------------------------------


def _sgd_step(u, v, X, y, lr, reduction):
    """One SGD step on MSELoss (no 1/2) of a minibatch: chains (C,), weights u (C, d), bias v
    (C,), examples X (C, B, d), labels y (C, B). The gradient of a mean loss is (2/B) Σ x̃ r,
    of a sum loss B times that."""
    B = X.shape[1]
    r = (X * u[:, None, :]).sum(-1) + v[:, None] - y  # (C, B) residuals ŷ − y
    scale = 2 * lr * (1.0 if reduction == "mean" else B) / B
    return u - scale * (X * r[..., None]).sum(1), v - scale * r.sum(1)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sgd_step_is_the_models_step(reduction):
    # The simulation below steps as LinearRegression (MSELoss, torch.optim.SGD) does.
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(5, 3, generator=gen), torch.randn(5, 1, generator=gen)
    model = LinearRegression(lr=0.07, reduction=reduction)
    model.initialize(3, generator=gen)
    u0, v0 = model.net.weight.detach().double().numpy().copy(), model.net.bias.detach().double().numpy().copy()
    optimizer = model.configure_optimizers()
    model.loss(model(X), y).backward()
    optimizer.step()
    u1, v1 = _sgd_step(u0, v0, X.double().numpy()[None], y.double().numpy()[None, :, 0], 0.07, reduction)
    assert np.allclose(u1, model.net.weight.detach().double().numpy(), atol=1e-6)
    assert np.allclose(v1, model.net.bias.detach().double().numpy(), atol=1e-6)


def _online_sgd(lr, B, d, reduction, noise, noise_kind, chains, burn, steps, seed):
    """Per-chain time averages of ‖w − w*‖² and (b − b*)² of online minibatch SGD (θ* = 0)."""
    rng = np.random.default_rng(seed)
    u, v = np.zeros((chains, d)), np.zeros(chains)
    w_acc, b_acc = np.zeros(chains), np.zeros(chains)
    for k in range(burn + steps):
        X = rng.standard_normal((chains, B, d))
        eps = noise * rng.standard_normal((chains, B))
        if noise_kind == "outliers":
            hit = rng.random((chains, B)) < OUTLIER_FRACTION
            eps = eps + np.where(hit, OUTLIER_SCALE * rng.standard_normal((chains, B)), 0.0)
        u, v = _sgd_step(u, v, X, eps, lr, reduction)
        if k >= burn:
            w_acc += (u**2).sum(1)
            b_acc += v**2
    return w_acc / steps, b_acc / steps


# (lr, batch_size, d, reduction, noise, noise_kind): a = 2 lr (B for sum) is 0.2, 0.16 and 0.3,
# 45%, 7% and 28% of the stability edge; the third runs on data.py's outlier noise.
SGD_CASES = [
    (0.1, 1, 2, "mean", 1.0, "gaussian"),
    (0.01, 8, 5, "sum", 0.5, "gaussian"),
    (0.15, 4, 2, "mean", 0.5, "outliers"),
]


@pytest.mark.parametrize("lr, B, d, reduction, noise, kind", SGD_CASES)
def test_sgd_stationary_second_moment_matches_simulation(lr, B, d, reduction, noise, kind):
    # 4000 independent chains, 100 burn-in steps (the second moments forget their start by a
    # factor below 1e-8 by then), then 300 steps averaged per chain. Chains are independent, so
    # the SE of the mean of the per-chain averages is their std / √4000 (0.1-0.4% here).
    w_avg, b_avg = _online_sgd(lr, B, d, reduction, noise, kind, chains=4000, burn=100, steps=300, seed=B)
    s2 = float(noise_variance(noise, kind))
    se = lambda v: v.std() / math.sqrt(len(v))  # noqa: E731
    assert _within(w_avg.mean(), se(w_avg), float(sgd_stationary_w_err_sq(lr, B, d, s2, reduction)))
    assert _within(b_avg.mean(), se(b_avg), float(sgd_stationary_b_err_sq(lr, B, d, s2, reduction)))
    total, total_se = (w_avg + b_avg).mean(), se(w_avg + b_avg)
    assert _within(total, total_se, float(sgd_stationary_sq_error(lr, B, d, s2, reduction)))
    if B == 1:
        # Refused alternatives: the small-lr law lr (d + 1) σ²/B, and the exact LMS answer with
        # the intercept's feature taken as Gaussian (D = d + 1 features, none constant).
        eta = lr * (B if reduction == "sum" else 1)
        assert not _within(total, total_se, eta * (d + 1) * s2 / B)
        a, D = 2 * eta, d + 1
        assert not _within(total, total_se, D * s2 * a / B / (2 - a * (1 + (D + 1) / B)))


def _second_moment_operator(lr, B, d, noise_var):
    """The exact map M -> E[e' e'ᵀ] of one online SGD step, as a matrix on vec(M), with the fourth
    moments E[x̃ x̃ᵀ M x̃ x̃ᵀ] computed by Gauss-Hermite quadrature (3 nodes a dimension are exact
    for the degree-4 polynomials involved), independently of the algebra in study.theory.
    Returns the matrix L and the constant c: vec(M') = L vec(M) + c."""
    a, beta, D = 2 * lr, 1.0 / B, d + 1
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    weights = weights / weights.sum()
    grid = np.stack(np.meshgrid(*[nodes] * d, indexing="ij"), -1).reshape(-1, d)
    prob = np.prod(np.stack(np.meshgrid(*[weights] * d, indexing="ij"), -1).reshape(-1, d), -1)
    xt = np.concatenate([grid, np.ones((len(grid), 1))], 1)  # (points, D)
    outer = xt[:, :, None] * xt[:, None, :]  # (points, D, D)
    L = np.zeros((D * D, D * D))
    for k in range(D * D):
        M = np.zeros(D * D)
        M[k] = 1.0
        M = M.reshape(D, D)
        K = np.einsum("p,pij,jk,pkl->il", prob, outer, M, outer)
        L[:, k] = ((1 - 2 * a + a * a * (1 - beta)) * M + a * a * beta * K).ravel()
    return L, (a * a * beta * noise_var * np.eye(D)).ravel()


@pytest.mark.parametrize("B, d", [(1, 1), (1, 2), (4, 3), (32, 2)])
def test_sgd_closed_forms_solve_the_exact_second_moment_recursion(B, d):
    edge = float(sgd_stability_edge(B, d))
    for lr in (0.2 * edge, 0.9 * edge):
        L, c = _second_moment_operator(lr, B, d, 0.3)
        M = np.linalg.solve(np.eye(len(c)) - L, c).reshape(d + 1, d + 1)
        assert np.isclose(np.trace(M[:d, :d]), sgd_stationary_w_err_sq(lr, B, d, 0.3), rtol=1e-10)
        assert np.isclose(M[d, d], sgd_stationary_b_err_sq(lr, B, d, 0.3), rtol=1e-10)
    # The edge is where the recursion's spectral radius crosses 1.
    radius = lambda lr: np.abs(np.linalg.eigvals(_second_moment_operator(lr, B, d, 0.0)[0])).max()  # noqa: E731
    assert radius(edge * (1 - 1e-6)) < 1 < radius(edge * (1 + 1e-6))


def test_sgd_stability_edge_and_limits():
    d, s2 = 2, 0.5
    for B in (1, 4, 32):
        edge = sgd_stability_edge(B, d)
        below = sgd_stationary_sq_error(edge * np.array([0.5, 0.9, 0.99, 0.9999]), B, d, s2)
        assert np.isfinite(below).all() and (np.diff(below) > 0).all() and below[-1] > 100 * below[0]
        assert np.isinf(sgd_stationary_sq_error(edge * np.array([1.0, 1.0001, 3.0]), B, d, s2)).all()
        # sum: the step is B times larger, so the edge is B times smaller
        assert np.isclose(sgd_stability_edge(B, d, "sum"), edge / B)
        assert np.isclose(
            sgd_stationary_sq_error(0.3 * edge / B, B, d, s2, "sum"), sgd_stationary_sq_error(0.3 * edge, B, d, s2)
        )
        # lr -> 0: the floor is lr (d + 1) σ² / B, w's part lr d σ² / B
        lr = 1e-7
        assert np.isclose(sgd_stationary_sq_error(lr, B, d, s2) / lr, (d + 1) * s2 / B, rtol=1e-5)
        assert np.isclose(sgd_stationary_w_err_sq(lr, B, d, s2) / lr, d * s2 / B, rtol=1e-5)
    # B -> ∞ is full-batch gradient descent on MSELoss (Hessian 2I): stable for lr < 1.
    assert np.isclose(sgd_stability_edge(10**9, d), 1.0, rtol=1e-7)
    # B = 1, d = 1: 2/(4 + √8), so a* = 2 − √2
    assert np.isclose(sgd_stability_edge(1, 1), (2 - math.sqrt(2)) / 2)
    assert sgd_stationary_sq_error(0.0, 4, d, s2) == 0.0 and sgd_stationary_sq_error(0.1, 4, d, 0.0) == 0.0
    got = sgd_stationary_sq_error(np.array([[0.01], [0.02]]), [1, 8], d, s2, ["mean", "sum"])
    assert got.shape == (2, 2) and np.isclose(got[1, 1], sgd_stationary_sq_error(0.16, 8, d, s2))
    with pytest.raises(ValueError, match="'reduction' parameter of sgd_stationary_sq_error must be one of"):
        sgd_stationary_sq_error(0.1, 4, d, s2, "avg")
    with pytest.raises(ValueError, match="'batch_size' parameter of sgd_stability_edge must be an integer >= 1"):
        sgd_stability_edge(0, d)
    with pytest.raises(ValueError, match="'noise_var' parameter of sgd_stationary_w_err_sq must be a finite number"):
        sgd_stationary_w_err_sq(0.1, 4, d, -1.0)


# --- online minibatch SGD with heavy-ball momentum -------------------------------------------


def _heavy_ball_step(u, v, bu, bv, X, y, lr, momentum, reduction):
    """One step of torch.optim.SGD(momentum=β, dampening=0, nesterov=False) on MSELoss, shapes of
    _sgd_step plus the buffers bu (C, d), bv (C,): buf ← β buf + g, θ ← θ − lr buf. Buffers that
    start at 0 give torch's first step, buf = g."""
    B = X.shape[1]
    r = np.einsum("cbd,cd->cb", X, u) + v[:, None] - y
    scale = 2 * (1.0 if reduction == "mean" else B) / B
    bu = momentum * bu + scale * np.einsum("cbd,cb->cd", X, r)
    bv = momentum * bv + scale * r.sum(1)
    return u - lr * bu, v - lr * bv, bu, bv


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_heavy_ball_step_is_the_models_step(reduction):
    # Three steps, so that the buffer's first step (buf = g) and its later ones are both checked.
    gen = torch.Generator().manual_seed(1)
    model = LinearRegression(lr=0.05, reduction=reduction, momentum=0.7)
    model.initialize(3, generator=gen)
    u, v = model.net.weight.detach().double().numpy().copy(), model.net.bias.detach().double().numpy().copy()
    bu, bv = np.zeros_like(u), np.zeros_like(v)
    plain = u, v  # plain SGD from the same start, which the momentum path must leave
    optimizer = model.configure_optimizers()
    for _ in range(3):
        X, y = torch.randn(5, 3, generator=gen), torch.randn(5, 1, generator=gen)
        optimizer.zero_grad()
        model.loss(model(X), y).backward()
        optimizer.step()
        Xn, yn = X.double().numpy()[None], y.double().numpy()[None, :, 0]
        u, v, bu, bv = _heavy_ball_step(u, v, bu, bv, Xn, yn, 0.05, 0.7, reduction)
        plain = _sgd_step(*plain, Xn, yn, 0.05, reduction)
        assert np.allclose(u, model.net.weight.detach().double().numpy(), atol=1e-6)
        assert np.allclose(v, model.net.bias.detach().double().numpy(), atol=1e-6)
    assert np.abs(u - plain[0]).max() > 1e-3


def _online_heavy_ball(lr, momentum, B, d, reduction, noise, chains, burn, steps, seed):
    """Per-chain time averages of ‖w − w*‖² and (b − b*)² of online heavy-ball SGD (θ* = 0),
    Gaussian noise of standard deviation ``noise``."""
    rng = np.random.default_rng(seed)
    u, v = np.zeros((chains, d)), np.zeros(chains)
    bu, bv = np.zeros_like(u), np.zeros_like(v)
    w_acc, b_acc = np.zeros(chains), np.zeros(chains)
    for k in range(burn + steps):
        X = rng.standard_normal((chains, B, d))
        eps = noise * rng.standard_normal((chains, B))
        u, v, bu, bv = _heavy_ball_step(u, v, bu, bv, X, eps, lr, momentum, reduction)
        if k >= burn:
            w_acc += (u**2).sum(1)
            b_acc += v**2
    return w_acc / steps, b_acc / steps


def _fourth_moments(d):
    """E[x̃_i x̃_j x̃_k x̃_l], x̃ = (x, 1), x ~ N(0, I_d), by Gauss-Hermite quadrature (exact here)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    weights = weights / weights.sum()
    grid = np.stack(np.meshgrid(*[nodes] * d, indexing="ij"), -1).reshape(-1, d)
    prob = np.prod(np.stack(np.meshgrid(*[weights] * d, indexing="ij"), -1).reshape(-1, d), -1)
    xt = np.concatenate([grid, np.ones((len(grid), 1))], 1)
    return np.einsum("p,pi,pj,pk,pl->ijkl", prob, xt, xt, xt, xt)


def _heavy_ball_moment_operator(lr, momentum, B, d, noise_var):
    """The exact map Z -> E[z' z'ᵀ] of one online heavy-ball step (``mean``) on the joint state
    z = (e_t, e_(t−1)) ∈ R^(2D), z' = A z + (a g, 0), A = [[(1 + β) I − a H, −β I], [I, 0]], built
    from E[H_ij H_kl] = (1 − 1/B) δ_ij δ_kl + E[x̃_i x̃_j x̃_k x̃_l]/B, independently of the algebra in
    study.theory (no symmetry, no reduction to traces). Returns L and c: vec(Z') = L vec(Z) + c."""
    a, beta, D = 2 * lr, momentum, d + 1
    n, eye = 2 * D, np.eye(D)
    EHH = (1 - 1 / B) * np.einsum("ij,kl->ijkl", eye, eye) + _fourth_moments(d) / B
    A0 = np.block([[(1 + beta) * eye, -beta * eye], [eye, 0 * eye]])
    top = np.zeros((n, n))
    top[:D, :D] = eye  # E of the embedded H
    L = np.zeros((n * n, n * n))
    for k in range(n * n):
        Z = np.zeros(n * n)
        Z[k] = 1.0
        Z = Z.reshape(n, n)
        out = A0 @ Z @ A0.T - a * (top @ Z @ A0.T + A0 @ Z @ top.T)
        out[:D, :D] += a * a * np.einsum("ijkl,jk->il", EHH, Z[:D, :D])
        L[:, k] = out.ravel()
    c = np.zeros((n, n))
    c[:D, :D] = a * a * noise_var / B * eye
    return L, c.ravel()


def _radius(L):
    return np.abs(np.linalg.eigvals(L)).max()


@pytest.mark.parametrize("B, d", [(1, 1), (1, 2), (4, 3), (32, 2)])
def test_sgd_momentum_closed_forms_solve_the_exact_joint_second_moment_recursion(B, d):
    D = d + 1
    for beta in (0.5, 0.9, 0.99):
        edge = float(sgd_momentum_stability_edge(beta, B, d))
        for lr in (0.2 * edge, 0.9 * edge):
            L, c = _heavy_ball_moment_operator(lr, beta, B, d, 0.3)
            Z = np.linalg.solve(np.eye(len(c)) - L, c).reshape(2 * D, 2 * D)
            P = Z[:D, :D]
            assert np.isclose(np.trace(P[:d, :d]), sgd_momentum_stationary_w_err_sq(lr, beta, B, d, 0.3), rtol=1e-9)
            assert np.isclose(P[d, d], sgd_momentum_stationary_b_err_sq(lr, beta, B, d, 0.3), rtol=1e-9)
            assert np.allclose(Z[D:, D:], P, rtol=1e-9)  # stationary: E e_(t−1) e_(t−1)ᵀ = E e_t e_tᵀ
            # The whole matrix P, not only its trace, is plain SGD's at the effective lr.
            L0, c0 = _second_moment_operator(float(sgd_momentum_effective_lr(lr, beta, B)), B, d, 0.3)
            assert np.allclose(P, np.linalg.solve(np.eye(len(c0)) - L0, c0).reshape(D, D), rtol=1e-9, atol=1e-14)
        # The edge is where the joint recursion's spectral radius crosses 1, and it is the first
        # crossing: the radius is below 1 on a grid below it.
        radius = lambda lr, beta=beta: _radius(_heavy_ball_moment_operator(lr, beta, B, d, 0.0)[0])  # noqa: E731
        assert radius(edge * (1 - 1e-6)) < 1 < radius(edge * (1 + 1e-6))
        assert all(radius(f * edge) < 1 for f in (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99))


# (lr, momentum, batch_size, d, reduction, noise, refused): the small-step law lr d σ²/((1 − β) B)
# ("small") and plain SGD's exact floor at lr/(1 − β) ("plug-in") are asserted to lie outside the
# tolerance where listed, within it plus 3% where not. The exact w part over the small-step law
# is 1.19, 1.018, 1.28 and 1.25, over the plug-in 0.92, 0.90, 0.52 and 0.94; lr is 15%, 1.6%, 20%
# and 18% of the momentum stability edge.
MOMENTUM_CASES = [
    (0.05, 0.5, 4, 3, "mean", 0.5, ("small", "plug-in")),
    (0.01, 0.9, 32, 2, "mean", 1.0, ("plug-in",)),  # d2l's batch: the small-step law holds to 2%
    (0.005, 0.9, 8, 2, "sum", 1.0, ("small", "plug-in")),
    (0.005, 0.9, 1, 2, "mean", 1.0, ("small", "plug-in")),
]


@pytest.mark.parametrize("lr, beta, B, d, reduction, noise, refused", MOMENTUM_CASES)
def test_sgd_momentum_stationary_second_moment_matches_simulation(lr, beta, B, d, reduction, noise, refused):
    # Independent chains from θ = θ*, buffers 0; the burn-in is where the exact joint recursion's
    # slowest mode has decayed by 1e-8 (46 to 230 steps), then 250 steps averaged per chain.
    eta = lr * (B if reduction == "sum" else 1)
    burn = math.ceil(math.log(1e-8) / math.log(_radius(_heavy_ball_moment_operator(eta, beta, B, d, 0.0)[0])))
    chains = 3000 if B > 8 else 4000
    w_avg, b_avg = _online_heavy_ball(lr, beta, B, d, reduction, noise, chains=chains, burn=burn, steps=250, seed=B + 7)
    s2 = noise**2
    se = lambda v: v.std() / math.sqrt(len(v))  # noqa: E731
    w_exact = float(sgd_momentum_stationary_w_err_sq(lr, beta, B, d, s2, reduction))
    assert _within(w_avg.mean(), se(w_avg), w_exact)
    assert _within(b_avg.mean(), se(b_avg), float(sgd_momentum_stationary_b_err_sq(lr, beta, B, d, s2, reduction)))
    total, total_se = (w_avg + b_avg).mean(), se(w_avg + b_avg)
    assert _within(total, total_se, float(sgd_momentum_stationary_sq_error(lr, beta, B, d, s2, reduction)))
    # The small-step law and the naive effective lr lr/(1 − β) in plain SGD's formula: refused
    # where listed, else within the tolerance plus 3%.
    laws = {
        "small": eta * d * s2 / ((1 - beta) * B),
        "plug-in": float(sgd_stationary_w_err_sq(lr / (1 - beta), B, d, s2, reduction)),
    }
    for name, value in laws.items():
        if name in refused:
            assert not _within(w_avg.mean(), se(w_avg), value), name
        else:
            assert abs(w_avg.mean() - value) <= Z * se(w_avg) + 0.03 * value, name


def test_sgd_momentum_limits_and_the_small_step_law():
    d, s2 = 2, 0.5
    lrs = np.array([0.001, 0.01, 0.03, 0.1, 0.3])
    for B in (1, 4, 32):
        # β = 0 is plain SGD, bit for bit, and so is its edge.
        for fn, plain in [
            (sgd_momentum_stationary_sq_error, sgd_stationary_sq_error),
            (sgd_momentum_stationary_w_err_sq, sgd_stationary_w_err_sq),
            (sgd_momentum_stationary_b_err_sq, sgd_stationary_b_err_sq),
        ]:
            for reduction in ("mean", "sum"):
                assert np.array_equal(fn(lrs / B, 0.0, B, d, s2, reduction), plain(lrs / B, B, d, s2, reduction))
        assert sgd_momentum_stability_edge(0.0, B, d) == sgd_stability_edge(B, d)
        for beta in (0.5, 0.9):
            # exactly plain SGD at the effective lr, 1/lr_eff = (1 − β)/lr + 2β/(1 + β)
            lr_eff = sgd_momentum_effective_lr(lrs / B, beta, B)
            assert np.allclose(1 / lr_eff, (1 - beta) * B / lrs + 2 * beta / (1 + beta), rtol=1e-12)
            got = sgd_momentum_stationary_w_err_sq(lrs / B, beta, B, d, s2)
            assert np.allclose(got, sgd_stationary_w_err_sq(lr_eff, B, d, s2), rtol=1e-12)
            # sum: η = lr B in place of lr
            assert np.allclose(
                sgd_momentum_stationary_sq_error(lrs / B**2, beta, B, d, s2, "sum"),
                sgd_momentum_stationary_sq_error(lrs / B, beta, B, d, s2),
                rtol=1e-12,
            )
            assert np.isclose(
                sgd_momentum_stability_edge(beta, B, d, "sum") * B, sgd_momentum_stability_edge(beta, B, d)
            )
            assert np.isclose(
                sgd_momentum_effective_lr(0.01, beta, B, "sum") * B, sgd_momentum_effective_lr(0.01 * B, beta, B)
            )
            # Past the edge: inf; below it: finite, increasing, and large near it.
            edge = sgd_momentum_stability_edge(beta, B, d)
            below = sgd_momentum_stationary_sq_error(edge * np.array([0.5, 0.9, 0.99, 0.9999]), beta, B, d, s2)
            assert np.isfinite(below).all() and (np.diff(below) > 0).all() and below[-1] > 100 * below[0]
            assert np.isinf(sgd_momentum_stationary_sq_error(edge * np.array([1.0, 1.0001, 3.0]), beta, B, d, s2)).all()
            # lr -> 0: lr d σ² / ((1 − β) B), and the first-order correction the docstring gives.
            for lr in (1e-5, 1e-6):
                ratio = sgd_momentum_stationary_w_err_sq(lr, beta, B, d, s2) / (lr * d * s2 / ((1 - beta) * B))
                first = lr / (1 + beta) + lr * (d + 2) / ((1 - beta) * B)
                assert np.isclose(ratio - 1, first, rtol=1e-3)
            assert np.isclose(
                sgd_momentum_stationary_b_err_sq(1e-7, beta, B, d, s2) / 1e-7, s2 / ((1 - beta) * B), rtol=1e-4
            )
    # The docstring's table, B = 32, d = 2: exact over the small-step law, and plain SGD's floor at
    # lr/(1 − β) over the exact (inf at lr = 0.1, β = 0.9, past plain SGD's edge).
    B, lr = 32, np.array([0.01, 0.03, 0.1])
    for beta, over_small, plug_over in [
        (0.5, [1.009, 1.028, 1.101], [1.014, 1.043, 1.172]),
        (0.9, [1.018, 1.056, 1.213], [1.107, 1.429, np.inf]),
    ]:
        exact = sgd_momentum_stationary_w_err_sq(lr, beta, B, d, s2)
        assert np.allclose(exact / (lr * d * s2 / ((1 - beta) * B)), over_small, atol=5e-4)
        assert np.allclose(sgd_stationary_w_err_sq(lr / (1 - beta), B, d, s2) / exact, plug_over, atol=5e-4)
    assert np.allclose(sgd_momentum_stability_edge([0.5, 0.9, 0.99], B, d), [1.1245, 0.6100, 0.08597], atol=1e-4)
    assert np.isclose(sgd_momentum_stationary_w_err_sq(0.005, 0.9, 1, d, 1.0) / (0.005 * d / 0.1), 1.2467, atol=1e-4)
    # Broadcasting, and refusals.
    got = sgd_momentum_stationary_sq_error(0.01, np.array([[0.0], [0.9]]), [1, 32], d, s2)
    assert got.shape == (2, 2) and got[1, 1] == sgd_momentum_stationary_sq_error(0.01, 0.9, 32, d, s2)
    with pytest.raises(
        ValueError, match="'momentum' parameter of sgd_momentum_stationary_w_err_sq must be a number from 0"
    ):
        sgd_momentum_stationary_w_err_sq(0.1, 1.0, 4, d, s2)
    with pytest.raises(
        ValueError, match="'momentum' parameter of sgd_momentum_stability_edge must be a finite number >= 0"
    ):
        sgd_momentum_stability_edge(-0.1, 4, d)
    with pytest.raises(ValueError, match="'lr' parameter of sgd_momentum_effective_lr must be a finite number >= 0"):
        sgd_momentum_effective_lr(-0.1, 0.5, 4)
    with pytest.raises(ValueError, match="'reduction' parameter of sgd_momentum_stationary_sq_error must be one of"):
        sgd_momentum_stationary_sq_error(0.1, 0.5, 4, d, s2, "avg")


def test_tail_averaged_sgd_reaches_polyak_juditsky_sigma2_d_over_n_and_the_last_iterate_does_not():
    """The engine's runs: 600 data sets of 10,000 examples, lr 0.03, the average of the
    iterates of epoch 2 (after the first). Its mean ‖w̄ − w‖² is σ² d / n within 4 standard
    errors (χ²-like: SE about 6%), while the last iterate's is several times larger."""
    from study import Grid, run_grid
    from study.theory import averaged_sgd_w_err_sq

    grid = Grid(num_train=[10_000], lr=[0.03], epoch=[2], average_from=[None, 1], replicates=600, num_val=10)
    df = run_grid(grid, progress=False)
    last = df[df["epoch"] == 2]
    expected = float(averaged_sgd_w_err_sq(10_000, 2, float(noise_variance(0.01))))
    sq = {a: rows["w_err_norm"].to_numpy() ** 2 for a, rows in last.groupby("average_from", observed=True)}
    averaged = sq["1"]
    se = averaged.std(ddof=1) / math.sqrt(len(averaged))
    assert abs(averaged.mean() - expected) < 4 * se, (averaged.mean(), expected, se)
    assert sq["none"].mean() > 4 * expected


@pytest.mark.parametrize("weight_decay", [0.02, 0.2])
def test_sgd_with_weight_decay_settles_on_ridge_bias_and_variance_where_n_is_large(weight_decay):
    """The engine's tail-averaged SGD with weight decay on the weight (n = 2,000, lr 0.05, the
    average of epochs 3-10, 300 data sets; noise 0.3 so that the variance is seen beside the
    bias): its mean ‖ŵ − w‖² is ridge's with α = nλ/2 within 4 standard errors and 3% (the
    W ≈ (n − 1) I approximation), and far from least squares' (λ = 0)."""
    from study import Grid, run_grid
    from study.theory import weight_decay_w_err_sq

    w = [2.0, -3.4]
    grid = Grid(
        num_train=[2000],
        lr=[0.05],
        weight_decay=[weight_decay],
        average_from=[2],
        epoch=[10],
        noise=[0.3],
        replicates=300,
        num_val=10,
        w=w,
    )
    df = run_grid(grid, progress=False)
    sq = df.loc[df["epoch"] == 10, "w_err_norm"].to_numpy() ** 2
    noise_var = float(noise_variance(0.3))
    expected = float(weight_decay_w_err_sq(2000, 2, noise_var, weight_decay, sum(v * v for v in w)))
    se = sq.std(ddof=1) / math.sqrt(len(sq))
    assert abs(sq.mean() - expected) < 4 * se + 0.03 * expected, (sq.mean(), expected, se)
    assert abs(sq.mean() - float(ols_w_err_sq_mean(2000, 2, noise_var))) > 10 * se
    assert float(weight_decay_w_err_sq(2000, 2, noise_var, 0.0, 5.0)) == pytest.approx(noise_var * 2 / 1999)


def test_the_engines_heavy_ball_runs_settle_on_the_momentum_floor():
    """The engine's runs (torch.optim.SGD's momentum, as the reference): 300 data sets of 20,000
    examples, one epoch at lr 0.03 (the online limit: least squares' own error is 100 times
    smaller). The mean ‖ŵ − w‖² is the exact floor within 4 standard errors, at β = 0.5 and 0.9."""
    from study import Grid, run_grid
    from study.theory import sgd_momentum_stationary_w_err_sq

    grid = Grid(num_train=[20_000], lr=[0.03], momentum=[0.5, 0.9], epoch=[1], replicates=300, num_val=10)
    df = run_grid(grid, progress=False)
    last = df[df["epoch"] == 1]
    noise_var = float(noise_variance(0.01))
    for beta, rows in last.groupby("momentum"):
        sq = rows["w_err_norm"].to_numpy() ** 2
        expected = float(sgd_momentum_stationary_w_err_sq(0.03, beta, 32, 2, noise_var))
        se = sq.std(ddof=1) / math.sqrt(len(sq))
        assert abs(sq.mean() - expected) < 4 * se, (beta, sq.mean(), expected, se)
