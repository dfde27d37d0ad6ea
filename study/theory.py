"""Least squares on the same training data, and closed-form expectations where theory is exact.

:func:`least_squares` is the floor any method can reach on one data set. The fit is solved in
float64 so that it is a reference, not a second source of rounding error, on the data's own
device: through the normal equations, (AᵀA)⁺ Aᵀy with A = [X, 1], which for the well-conditioned
Gaussian designs here is accurate to about 1e-12 and costs one pass over the data, where an SVD
of every data set would cost more than training on a GPU. With fewer examples than unknowns
(num_train < d + 1) the pseudo-inverse gives the minimum-norm solution.

The other functions are expectations in closed form, for the data of :mod:`study.data`
(X ~ N(0, I_d), y = Xw + b + ε, ε independent of X) and the model of :mod:`study.model`
(``squared`` is MSELoss, without the 1/2). They take numbers or NumPy arrays, broadcast, and
return NumPy float64 arrays (0-d for scalar input), so that a figure can draw them as curves:

- :func:`noise_variance`: σ² = Var ε of one training example, for each noise kind;
- :func:`ols_w_err_sq_mean`: E‖ŵ_ols − w‖² = σ² d / (n − d − 2), any noise of variance σ²;
- :func:`ols_b_err_sq_mean`: E(b̂_ols − b)² = σ² (n − 2) / (n (n − d − 2)), likewise;
- :func:`ols_w_err_norm_quantile`: quantiles of ‖ŵ_ols − w‖, from ‖ŵ_ols − w‖² ~ σ² d/(n − d)
  · F(d, n − d), Gaussian noise only;
- :func:`sgd_stationary_sq_error` (and its w and b parts): E‖θ − θ*‖² where constant-lr
  minibatch SGD on the ``squared`` loss settles, in the online limit (fresh examples each step);
- :func:`sgd_stability_edge`: the largest lr for which that second moment is finite;
- :func:`sgd_momentum_stationary_sq_error` (its w and b parts, :func:`sgd_momentum_effective_lr`,
  :func:`sgd_momentum_stability_edge`): the same with heavy-ball momentum β, exactly plain SGD's
  at the effective lr given by 1/lr_eff = (1 − β)/lr + 2β/(1 + β) (``mean``), which is
  lr/(1 − β) only for small lr;
- :func:`averaged_sgd_w_err_sq`: σ² d / n, where the average of SGD's iterates goes (Polyak &
  Juditsky 1992): least squares' own error, to O(d/n);
- :func:`weight_decay_w_err_sq`: the ridge estimator that SGD with weight decay settles on, its
  squared bias plus variance, where n ≫ d.

Nothing here describes the ``huber`` loss. The derivations are in the docstrings, and
tests/test_theory.py checks every formula against simulation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ._checks import fail
from .vocabulary import NOISE_KINDS, REDUCTIONS

if TYPE_CHECKING:  # torch is imported where least squares is solved: the figures' theory needs numpy alone
    import torch

__all__ = [
    "least_squares",
    "least_squares_from_moments",
    "noise_variance",
    "ols_w_err_sq_mean",
    "ols_b_err_sq_mean",
    "ols_w_err_norm_quantile",
    "sgd_stationary_sq_error",
    "sgd_stationary_w_err_sq",
    "sgd_stationary_b_err_sq",
    "sgd_stability_edge",
    "sgd_momentum_stationary_sq_error",
    "sgd_momentum_stationary_w_err_sq",
    "sgd_momentum_stationary_b_err_sq",
    "sgd_momentum_effective_lr",
    "sgd_momentum_stability_edge",
    "averaged_sgd_w_err_sq",
    "weight_decay_w_err_sq",
]


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
    import torch

    from .sums import tree_sum_

    X = X.detach().to(torch.float64)
    y = y.detach().to(torch.float64).reshape(*X.shape[:-1], 1)
    design = torch.cat([X, torch.ones_like(X[..., :1])], dim=-1)  # (..., n, d + 1)
    # Sums of products in a fixed order (study.sums), not matmuls or sum(): those pick their
    # kernel (and rounding) by the batch's shape, and a data set's fit must not depend on the
    # others beside it. The batched engine's second moments are these same sums.
    cols = design.unbind(-1)
    k = len(cols)
    gram = torch.empty(*design.shape[:-2], k, k, dtype=torch.float64, device=design.device)
    for i in range(k):
        for j in range(i + 1):  # symmetric: each product once
            gram[..., i, j] = gram[..., j, i] = tree_sum_(cols[i] * cols[j])
    moment = torch.stack([tree_sum_(c * y[..., 0]) for c in cols], -1)  # (..., d + 1)
    return least_squares_from_moments(gram, moment)


def least_squares_from_moments(gram: torch.Tensor, moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`least_squares` from the sums it needs: ``gram`` = Σ u uᵀ and ``moment`` = Σ u y
    over the examples, u = (x, 1), float64, shapes (..., d + 1, d + 1) and (..., d + 1). (The
    batched engine has them already, in each stream's second moments.)"""
    import torch

    # pinv, not solve: a rank-deficient Gram (n < d + 1) gets the minimum-norm answer. On the
    # CPU whatever the device: CUDA's batched decompositions may choose their algorithm by the
    # batch's size, and the sums are small.
    gram, moment = gram.cpu(), moment.cpu()
    k = gram.shape[-1]
    if k <= _BATCHED_PINV_UP_TO or gram.dim() == 2:
        coef = (torch.linalg.pinv(gram, hermitian=True) @ moment[..., None])[..., 0]  # (..., d + 1)
    else:
        # One matrix at a time: past a few features, a batch's pinv and product round otherwise
        # than one matrix's (measured: d = 12 and up), and a run's fit must not depend on the
        # streams beside it in its chunk. Each a fresh copy: the LAPACK kernels' rounding may
        # follow the data's alignment in memory, which a view's offset would make vary.
        flat_g, flat_m = gram.reshape(-1, k, k), moment.reshape(-1, k)
        coef = torch.stack(
            [(torch.linalg.pinv(g.clone(), hermitian=True) @ m.clone()[:, None])[:, 0] for g, m in zip(flat_g, flat_m)]
        )
        coef = coef.reshape(*gram.shape[:-1])
    return coef[..., :-1], coef[..., -1]


#: The most coefficients (d + 1) whose least-squares fits are solved as one batch: the same bits
#: as one at a time (tests/test_engine.py checks chunking for d = 1 to 3).
_BATCHED_PINV_UP_TO = 4


# --------------------------------------------------------------------------------------------
# Argument checks for the closed forms: arrays are checked elementwise, and a refusal names the
# parameter and the first offending value, in the shape of study._checks.


def _real_array(value, name: str, where: str, *, low: float = 0.0, strict: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        fail(name, where, "a real number or an array of them", value)
    relation = ">" if strict else ">="
    bad = ~np.isfinite(arr) | ((arr <= low) if strict else (arr < low))
    if bad.any():
        fail(name, where, f"a finite number {relation} {low:g} (or an array of them)", arr[bad].flat[0].item())
    return arr


def _int_array(value, name: str, where: str, *, low: int) -> np.ndarray:
    arr = _real_array(value, name, where, low=-math.inf, strict=True)
    bad = (arr != np.round(arr)) | (arr < low)
    if bad.any():
        fail(name, where, f"an integer >= {low} (or an array of them)", arr[bad].flat[0].item())
    return arr


def _choice_array(value, name: str, where: str, choices) -> np.ndarray:
    arr = np.asarray(value)
    bad = ~np.isin(arr, list(choices))
    if bad.any():
        fail(name, where, f"one of {list(choices)} (or an array of them)", arr[bad].flat[0].item())
    return arr


def _result(arr: np.ndarray) -> np.ndarray:
    """float64, a 0-d array for scalar input (NumPy's reductions would give a numpy scalar)."""
    return np.asarray(arr, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# The noise


def noise_variance(noise, noise_kind="gaussian") -> np.ndarray:
    """Variance σ² of the additive noise term of one *training* example, as study.data draws it.

    - ``gaussian``: noise · N(0, 1), so σ² = noise².
    - ``student_t``: noise · t_ν with ν = STUDENT_T_DF = 3, so σ² = noise² ν/(ν − 2) = 3 noise²
      (finite, but its fourth moment is not: sample variances of it converge slowly).
    - ``outliers``: noise · N(0, 1) plus, with probability p = OUTLIER_FRACTION, an independent
      gross error G ~ N(0, s²), s = OUTLIER_SCALE; the term has mean 0 and
      σ² = noise² + p s² = noise² + 10. Only training labels get gross errors; the validation
      labels keep Var = noise².

    Every kind is zero-mean, independent of X and independent across examples. The
    least-squares means (:func:`ols_w_err_sq_mean`, :func:`ols_b_err_sq_mean`) and the SGD
    second moments (:func:`sgd_stationary_sq_error`) use nothing of the noise but this variance,
    so they hold for every kind with this σ². The least-squares quantiles
    (:func:`ols_w_err_norm_quantile`) hold for Gaussian noise only, and nothing in this module
    describes the ``huber`` loss, whose behaviour depends on the whole noise distribution.

    Parameters
    ----------
    noise : float or array, >= 0
        The data's ``noise`` setting (the scale of the noise).
    noise_kind : {"gaussian", "student_t", "outliers"} or array of them, default="gaussian"

    Returns
    -------
    float64 array, broadcast over the arguments.

    Examples
    --------
    >>> noise_variance(0.5, ["gaussian", "student_t", "outliers"]).tolist()
    [0.25, 0.75, 10.25]
    """
    where = "parameter of noise_variance"
    noise = _real_array(noise, "noise", where)
    from .data import OUTLIER_FRACTION, OUTLIER_SCALE, STUDENT_T_DF  # the data's own constants (data imports torch)

    kind = _choice_array(noise_kind, "noise_kind", where, NOISE_KINDS)
    gaussian = noise**2
    student_t = gaussian * STUDENT_T_DF / (STUDENT_T_DF - 2)
    outliers = gaussian + OUTLIER_FRACTION * OUTLIER_SCALE**2
    return _result(np.where(kind == "student_t", student_t, np.where(kind == "outliers", outliers, gaussian)))


# --------------------------------------------------------------------------------------------
# Least squares with an intercept on Gaussian features


def _ols_args(num_train, d, noise_var, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = _int_array(num_train, "num_train", where, low=1)
    d = _int_array(d, "d", where, low=1)
    noise_var = _real_array(noise_var, "noise_var", where)
    n, d, noise_var = np.broadcast_arrays(n, d, noise_var)  # unpacked: numpy types it a tuple of any length
    return n, d, noise_var


def ols_w_err_sq_mean(num_train, d, noise_var) -> np.ndarray:
    """E‖ŵ_ols − w‖² of least squares with an intercept: σ² d / (n − d − 2).

    Derivation. Fit y = Xw + b + ε with A = [X, 1], X (n, d) with rows x_i ~ N(0, I_d) and ε
    independent of X with E ε = 0, Cov ε = σ² I. Profiling out the intercept (Frisch-Waugh-Lovell)
    leaves the centred design X_c = X − 1 x̄ᵀ: ŵ − w = W⁻¹ X_cᵀ ε with W = X_cᵀ X_c, so
    E[(ŵ − w)(ŵ − w)ᵀ | X] = σ² W⁻¹. For Gaussian rows W = Σ (x_i − x̄)(x_i − x̄)ᵀ is Wishart
    W_d(n − 1, I), independent of x̄, and the inverse-Wishart mean is
    E W⁻¹ = I / (n − 1 − d − 1). Taking the trace: E‖ŵ − w‖² = σ² d / (n − d − 2).

    Only σ² enters, so the formula holds for every noise kind of study.data with σ² from
    :func:`noise_variance`.

    Parameters
    ----------
    num_train : int or array, >= 1
        n, the number of training examples.
    d : int or array, >= 1
        The number of features (len(w)).
    noise_var : float or array, >= 0
        σ², e.g. ``noise_variance(noise, noise_kind)``.

    Returns
    -------
    float64 array: the mean; ``inf`` where d < n <= d + 2 (ŵ_ols is unique but E W⁻¹ diverges),
    ``nan`` where n <= d (least squares is not unique; the minimum-norm fit of
    :func:`least_squares` is another estimator). 0 where σ² = 0 and n > d (an exact fit).
    """
    n, d, noise_var = _ols_args(num_train, d, noise_var, "parameter of ols_w_err_sq_mean")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = noise_var * d / (n - d - 2)
    return _result(_ols_domain(mean, n, d, noise_var))


def ols_b_err_sq_mean(num_train, d, noise_var) -> np.ndarray:
    """E(b̂_ols − b)² of the intercept: σ²/n · (1 + d/(n − d − 2)) = σ² (n − 2) / (n (n − d − 2)).

    Derivation. The intercept of the fit is b̂ = ȳ − x̄ᵀŵ, so b̂ − b = ε̄ − x̄ᵀ(ŵ − w). Given X,
    ε̄ and ŵ − w = W⁻¹ X_cᵀ ε are uncorrelated (Cov = σ² W⁻¹ X_cᵀ 1 / n = 0, the centred columns
    sum to zero), so E[(b̂ − b)² | X] = σ²/n + σ² x̄ᵀ W⁻¹ x̄ (notation of
    :func:`ols_w_err_sq_mean`). For Gaussian rows x̄ ~ N(0, I/n) is independent of W, hence
    E x̄ᵀW⁻¹x̄ = tr(E W⁻¹ · I/n) = d / (n (n − d − 2)), and the sum is the formula. The first term
    is the error of the mean of n labels; the second is what estimating w costs the intercept.

    Only σ² enters (every noise kind of study.data). Parameters and Returns as
    :func:`ols_w_err_sq_mean`.
    """
    n, d, noise_var = _ols_args(num_train, d, noise_var, "parameter of ols_b_err_sq_mean")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = noise_var * (n - 2) / (n * (n - d - 2))
    return _result(_ols_domain(mean, n, d, noise_var))


def _ols_domain(mean: np.ndarray, n: np.ndarray, d: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    mean = np.where(n <= d + 2, np.inf, mean)
    mean = np.where(noise_var == 0, 0.0, mean)
    return np.where(n <= d, np.nan, mean)


def ols_w_err_norm_quantile(q, num_train, d, noise_var) -> np.ndarray:
    """The q-quantile of ‖ŵ_ols − w‖ for Gaussian noise: σ sqrt(d/(n − d) · F_q(d, n − d)).

    Derivation. Given X, ŵ − w = σ W^(-1/2) z with z ~ N(0, I_d) independent of the Wishart
    W ~ W_d(n − 1, I) of :func:`ols_w_err_sq_mean`, so ‖ŵ − w‖² = σ² zᵀW⁻¹z. Write z = ‖z‖ u
    with u uniform on the sphere: ‖z‖² ~ χ²_d, u and W are independent of it and of each other.
    W is rotationally invariant (QWQᵀ ~ W), so uᵀW⁻¹u has the law of (W⁻¹)₁₁ whatever u is, and
    1/(W⁻¹)₁₁ = W₁₁ − W₁₂ W₂₂⁻¹ W₂₁, a Schur complement, is χ² with (n − 1) − (d − 1) = n − d
    degrees of freedom. Hence ‖ŵ − w‖² = σ² χ²_d / χ²_(n−d) with the two independent, that is
    σ² d/(n − d) · F(d, n − d). (Its mean, σ² d E[1/χ²_(n−d)] = σ² d/(n − d − 2), is
    :func:`ols_w_err_sq_mean`.) The norm's quantile is the square root of the square's.

    Gaussian noise only: for ``student_t`` or ``outliers`` noise the law of zᵀW⁻¹z changes even
    at equal variance (the mean does not). The F quantile is computed here, without SciPy, from
    the regularized incomplete beta function (continued fraction) inverted by safeguarded Newton
    steps, to about 1e-10 relative for n up to 10⁴ (1e-9 at 10⁶, where log B(a, b) cancels).

    Parameters
    ----------
    q : float or array in [0, 1]
        The probability, e.g. 0.5 for the median, 0.1 and 0.9 for a 10-90% band.
    num_train, d, noise_var :
        As :func:`ols_w_err_sq_mean`.

    Returns
    -------
    float64 array: the quantile; ``nan`` where n <= d. 0 at q = 0 or σ² = 0, ``inf`` at q = 1.

    Examples
    --------
    >>> float(ols_w_err_norm_quantile(0.5, 1000, 2, 0.01))  # noise 0.1: the median ‖ŵ − w‖
    0.0037...
    """
    where = "parameter of ols_w_err_norm_quantile"
    q = _real_array(q, "q", where)
    if (q > 1).any():
        fail("q", where, "a probability in [0, 1] (or an array of them)", q[q > 1].flat[0].item())
    n, d, noise_var = _ols_args(num_train, d, noise_var, where)
    q, n, d, noise_var = np.broadcast_arrays(q, n, d, noise_var)
    ok = n > d
    dfd = np.where(ok, n - d, 1.0)
    f = _f_quantile(q, d, dfd)
    with np.errstate(invalid="ignore"):
        out = np.sqrt(noise_var * d / dfd * f)
    out = np.where(noise_var == 0, 0.0, out)
    return _result(np.where(ok, out, np.nan))


# The F distribution's quantile, without SciPy: P(F(d1, d2) <= f) = I_x(d1/2, d2/2) with
# x = d1 f / (d1 f + d2), I the regularized incomplete beta function (Numerical Recipes, 3rd ed.,
# section 6.4: its continued fraction, evaluated by the modified Lentz method).

_TINY = 1e-300
_CF_EPS = 1e-15
_CF_MAX_TERMS = 100_000


def _lgamma(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.lgamma, otypes=[float])(x)


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The continued fraction of I_x(a, b), converging fast for x < (a + 1)/(a + b + 2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    dd = 1.0 - qab * x / qap
    dd = 1.0 / np.where(np.abs(dd) < _TINY, _TINY, dd)
    h = dd.copy()
    done = np.zeros(x.shape, dtype=bool)  # sticky: once converged, rounding noise may not undo it
    for m in range(1, _CF_MAX_TERMS + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            dd = 1.0 + num * dd
            dd = 1.0 / np.where(np.abs(dd) < _TINY, _TINY, dd)
            c = 1.0 + num / c
            c = np.where(np.abs(c) < _TINY, _TINY, c)
            delta = np.where(done, 1.0, dd * c)
            h = h * delta
        done |= np.abs(delta - 1.0) < _CF_EPS
        if done.all():
            return h
    raise RuntimeError("the incomplete beta function's continued fraction did not converge")  # pragma: no cover


def _betainc(a, b, x, xc, log_beta) -> tuple[np.ndarray, np.ndarray]:
    """Regularized incomplete beta I_x(a, b), given x, xc = 1 − x (each computed accurately) and
    log B(a, b); and x^a (1 − x)^b / B(a, b), the derivative of I along log(x / (1 − x))."""
    with np.errstate(divide="ignore"):
        front = np.exp(a * np.log(x) + b * np.log(xc) - log_beta)
    direct = x < (a + 1.0) / (a + b + 2.0)
    # I_x(a, b) = 1 − I_(1−x)(b, a): use the side where the fraction converges fast.
    aa, bb, xx = np.where(direct, a, b), np.where(direct, b, a), np.where(direct, x, xc)
    part = front * _betacf(aa, bb, xx) / aa
    return np.where(direct, part, 1.0 - part), front


def _f_quantile(q, d1, d2) -> np.ndarray:
    """The q-quantile of F(d1, d2): Newton's method on y = log f, kept inside a bisection bracket.

    P(F <= e^y) = I_x(d1/2, d2/2) with x = d1 e^y / (d1 e^y + d2), and its derivative in y is
    x^(d1/2) (1 − x)^(d2/2) / B(d1/2, d2/2), since dx/dy = x (1 − x).
    """
    q, d1, d2 = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (q, d1, d2)))
    a, b = d1 / 2, d2 / 2
    log_beta = _lgamma(a) + _lgamma(b) - _lgamma(a + b)
    lo, hi = np.full(q.shape, -300.0), np.full(q.shape, 300.0)  # e^±300 brackets any q a figure asks
    y = np.log(d2 / np.maximum(d2 - 2, 1.0))  # log of the mean (or of d2): a start in the bulk
    for _ in range(200):
        scale = d1 * np.exp(y) + d2
        cdf, dcdf = _betainc(a, b, d1 * np.exp(y) / scale, d2 / scale, log_beta)
        below = cdf < q
        lo, hi = np.where(below, y, lo), np.where(below, hi, y)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            newton = y - (cdf - q) / dcdf
        inside = np.isfinite(newton) & (newton > lo) & (newton < hi)
        y_next = np.where(inside, newton, (lo + hi) / 2)
        converged = np.abs(y_next - y) < 1e-14 * np.maximum(1.0, np.abs(y))
        y = y_next
        if np.all(converged | (q <= 0) | (q >= 1)):
            break
    return np.where(q <= 0, 0.0, np.where(q >= 1, np.inf, np.exp(y)))


# --------------------------------------------------------------------------------------------
# Constant-learning-rate SGD on the squared loss, online


def _sgd_args(lr, batch_size, d, noise_var, reduction, where: str):
    lr = _real_array(lr, "lr", where)
    B = _int_array(batch_size, "batch_size", where, low=1)
    d = _int_array(d, "d", where, low=1)
    noise_var = _real_array(noise_var, "noise_var", where)
    reduction = _choice_array(reduction, "reduction", where, REDUCTIONS)
    lr, B, d, noise_var, reduction = np.broadcast_arrays(lr, B, d, noise_var, reduction)
    # a: the step on e = θ − θ* per unit of the minibatch's mean Gram matrix. MSELoss has no 1/2,
    # so the gradient of the mean loss is 2 H e − 2 g, and ``sum`` multiplies it by B.
    a = 2 * lr * np.where(reduction == "sum", B, 1.0)
    return a, B, d, noise_var


def _sgd_edge_a(B: np.ndarray, d: np.ndarray) -> np.ndarray:
    return 4 * B / (2 * B + d + 1 + np.sqrt(d**2 + 6 * d + 1))


def _sgd_fixed_point(a, B, d, s2, stable) -> tuple[np.ndarray, np.ndarray]:
    """The fixed point (t, s) of the trace recursions of plain SGD with step a; inf where not stable."""
    beta = 1.0 / B
    p = 2 - a * (1 + (d + 1) * beta)
    q = 2 - a
    det = p * q - a**2 * d * beta**2
    with np.errstate(divide="ignore", invalid="ignore"):
        w_part = a * d * beta * s2 * (q + a * beta) / det
        b_part = a * beta * (w_part + s2) / q
    return _result(np.where(stable, w_part, np.inf)), _result(np.where(stable, b_part, np.inf))


def _sgd_stationary(lr, batch_size, d, noise_var, reduction, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(E‖w − w*‖², E(b − b*)²) at stationarity; inf from the stability edge on."""
    a, B, d, s2 = _sgd_args(lr, batch_size, d, noise_var, reduction, where)
    return _sgd_fixed_point(a, B, d, s2, a < _sgd_edge_a(B, d))


def sgd_stationary_sq_error(lr, batch_size, d, noise_var, reduction="mean") -> np.ndarray:
    """E‖θ − θ*‖², θ = (w, b), where constant-lr minibatch SGD on the ``squared`` loss settles.

    This is the noise floor of SGD in the *online* limit: every minibatch is B fresh examples
    (x ~ N(0, I_d), y = xᵀw* + b* + ε), which is what a run with num_train large next to the
    steps SGD needs to forget its past sees. It is the sum of :func:`sgd_stationary_w_err_sq`
    and :func:`sgd_stationary_b_err_sq`.

    Derivation. Write x̃ = (x, 1) ∈ R^(d+1) (the bias's "feature" is the constant 1) and
    e = θ − θ*. On a minibatch, MSELoss (no 1/2) with ``mean`` has gradient
    (2/B) Σ x̃_i (x̃_iᵀe − ε_i), so a step of SGD is

        e' = (I − a H) e + a g,    H = (1/B) Σ x̃_i x̃_iᵀ,  g = (1/B) Σ x̃_i ε_i,

    with a = 2 lr (``mean``) or 2 lr B (``sum``, whose gradient is B times larger). The batch is
    independent of e, E H = I (E x = 0, E x xᵀ = I), and g has mean 0, E g gᵀ = σ² I / B and
    E[g eᵀ] = 0, for any zero-mean noise of variance σ² independent of x. So M = E e eᵀ obeys

        M' = E[(I − a H) M (I − a H)] + a² σ² I / B
           = (1 − 2a + a²(1 − β)) M + a² β K(M) + a² β σ² I,    β = 1/B,

    where the pairs i ≠ j of the batch give M and the B diagonal terms give
    K(M) = E[x̃ x̃ᵀ M x̃ x̃ᵀ]. With M = [[U, c], [cᵀ, s]] (U the w block, s = E(b − b*)²) and the
    Gaussian fourth moments E[x xᵀ U x xᵀ] = 2U + tr(U) I, E x = 0, E[x_i x_j x_k] = 0,

        K(M) = [[2U + (tr U + s) I, 2c], [2cᵀ, tr U + s]].

    The cross moment c contracts by itself (c' = ((1 − a)² + a²β) c, and by the symmetry
    (x, w) → (−x, −w) it is 0 at stationarity); the traces t = tr U = E‖w − w*‖² and s obey a
    closed pair of scalar recursions (the blocks couple through tr U + s, the squared residual):

        t' = ((1 − a)² + a²β(d + 1)) t + a²β d s + a²β d σ²
        s' = (1 − a)² s + a²β t + a²β σ².

    Their fixed point, with p = 2 − a(1 + (d + 1)β) and q = 2 − a:

        t = a β d σ² (q + aβ) / (p q − a² β² d),    s = a β (t + σ²) / q.

    For small lr, t + s → lr (d + 1) σ² / B (``mean``): the floor is proportional to lr. This is
    the familiar small-step law: the stationary covariance Σ solves H Σ + Σ H = lr Σ_g, with
    H = 2I the loss's Hessian and Σ_g = 4σ² I / B the covariance of the minibatch gradient at θ*,
    so Σ = lr σ² I / B. Past :func:`sgd_stability_edge` the second moments
    grow without bound and this returns ``inf``.

    This is the classical mean-square analysis of the LMS filter with Gaussian inputs (Feuer &
    Weinstein, "Convergence analysis of LMS filters with uncorrelated Gaussian data", IEEE Trans.
    ASSP 33(1), 1985; Haykin, *Adaptive Filter Theory*, the LMS chapters), here with a minibatch
    and a deterministic intercept feature; see also Bach & Moulines (NeurIPS 2013) and Jain,
    Kakade, Kidambi, Netrapalli & Sidford, "Parallelizing stochastic gradient descent for least
    squares regression" (JMLR 2018) for constant-step and minibatch least-squares SGD.

    Assumptions and limits:

    - the ``squared`` loss only (nothing here holds for ``huber``);
    - Gaussian features, as study.data draws them (the fourth moments above are Gaussian);
    - any zero-mean noise independent of X with variance σ² (only σ² enters the recursion), so
      all noise kinds of study.data with ``noise_variance(noise, noise_kind)``; but only the
      second moment: the law of ‖θ − θ*‖ (its median) depends on more than σ², and is not
      Gaussian near the edge (heavy tails);
    - fresh examples at every step. With a finite training set run for many epochs, SGD instead
      fluctuates around the least-squares fit of that set: E‖ŵ − w‖² is then about
      :func:`ols_w_err_sq_mean` plus a fluctuation term like this one (with the residual variance
      about σ²(1 − (d + 1)/n)), and when an epoch is short next to the steps SGD needs to forget
      (about 1/a), random reshuffling leaves the end-of-epoch iterate closer to the fit than
      this. At large num_train, with few epochs, the online value is the floor.

    Parameters
    ----------
    lr : float or array, >= 0
    batch_size : int or array, >= 1
    d : int or array, >= 1
        The number of features (the intercept comes on top).
    noise_var : float or array, >= 0
        σ², e.g. ``noise_variance(noise, noise_kind)``.
    reduction : {"mean", "sum"} or array of them, default="mean"

    Returns
    -------
    float64 array: E‖θ − θ*‖²; ``inf`` where lr >= sgd_stability_edge(batch_size, d, reduction).

    Examples
    --------
    d2l's setting (noise 0.01, lr 0.03, batch 32, w of 2 entries):

    >>> float(sgd_stationary_sq_error(0.03, 32, 2, noise_variance(0.01)))
    2.9088...e-07
    """
    w_part, b_part = _sgd_stationary(lr, batch_size, d, noise_var, reduction, "parameter of sgd_stationary_sq_error")
    return _result(w_part + b_part)


def sgd_stationary_w_err_sq(lr, batch_size, d, noise_var, reduction="mean") -> np.ndarray:
    """The w part of :func:`sgd_stationary_sq_error`: E‖w − w*‖² at stationarity,
    a β d σ² (q + aβ) / (p q − a² β² d) in its notation; → lr d σ²/B for small lr (``mean``)."""
    return _sgd_stationary(lr, batch_size, d, noise_var, reduction, "parameter of sgd_stationary_w_err_sq")[0]


def sgd_stationary_b_err_sq(lr, batch_size, d, noise_var, reduction="mean") -> np.ndarray:
    """The intercept part of :func:`sgd_stationary_sq_error`: E(b − b*)² at stationarity,
    a β (t + σ²) / (2 − a) in its notation; → lr σ²/B for small lr (``mean``)."""
    return _sgd_stationary(lr, batch_size, d, noise_var, reduction, "parameter of sgd_stationary_b_err_sq")[1]


def sgd_stability_edge(batch_size, d, reduction="mean") -> np.ndarray:
    """The largest lr for which online minibatch SGD on the ``squared`` loss has a finite
    stationary second moment: 2B / (2B + d + 1 + sqrt(d² + 6d + 1)) for ``mean``, that over B for
    ``sum``.

    Derivation (notation of :func:`sgd_stationary_sq_error`). The second-moment recursion is
    linear. The traceless part of U and the cross moment c contract by (1 − a)² + a²β; the pair
    (t, s) evolves by T = [[(1 − a)² + a²β(d + 1), a²βd], [a²β, (1 − a)²]], whose entries are
    non-negative and whose first diagonal entry is at least (1 − a)² + a²β. By Perron-Frobenius
    the whole recursion is stable iff the spectral radius of T is < 1, that is iff I − T is a
    non-singular M-matrix: a p > 0, a q > 0 and det(I − T) = a²(p q − a²β²d) > 0. The
    determinant (divided by a²), 4 − a(4 + 2(d + 1)β) + a²(1 + (d + 1)β − dβ²), is below p q, so
    it vanishes before p or q does, first at

        a* = 4 / (2 + β (d + 1 + sqrt(d² + 6d + 1))),

    and lr* = a*/2 (``mean``) or a*/(2B) (``sum``). Checks: B → ∞ gives lr* → 1, full-batch
    gradient descent on MSELoss (Hessian 2I); with B = 1 and all d + 1 features Gaussian (no
    constant intercept feature) the same algebra gives the classical LMS bound a < 2/(d + 3).

    Past the edge the second moment diverges, but the iterate need not: a random linear
    recursion can converge in law to a heavy-tailed stationary distribution of infinite variance
    (Kesten's theorem; for SGD, Gürbüzbalaban, Şimşekli & Zhu, ICML 2021), so runs just past the
    edge need not all blow up, and runs just below it have rare large excursions. On a finite
    training set, over many epochs, the edge differs (the minibatches are then drawn from that
    set, without replacement within an epoch).

    Returns
    -------
    float64 array of lr values.
    """
    where = "parameter of sgd_stability_edge"
    B = _int_array(batch_size, "batch_size", where, low=1)
    d = _int_array(d, "d", where, low=1)
    reduction = _choice_array(reduction, "reduction", where, REDUCTIONS)
    B, d, reduction = np.broadcast_arrays(B, d, reduction)
    return _result(_sgd_edge_a(B, d) / 2 / np.where(reduction == "sum", B, 1.0))


# --------------------------------------------------------------------------------------------
# The same, with heavy-ball momentum (torch.optim.SGD's momentum β, dampening 0, not Nesterov)


def _momentum_array(value, where: str) -> np.ndarray:
    arr = _real_array(value, "momentum", where)
    bad = arr >= 1
    if bad.any():
        fail(
            "momentum", where, "a number from 0 up to, not including, 1 (or an array of them)", arr[bad].flat[0].item()
        )
    return arr


def _momentum_a_eff(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The step of plain SGD with momentum's stationary second moment: 1/a_eff = (1 − β)/a + β/(1 + β)."""
    return a * (1 + m) / (1 - m * m + a * m)


def _momentum_edge_a(m: np.ndarray, B: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The step a at which a_eff reaches plain SGD's edge a*: a_eff(a) = a* solved for a."""
    a_star = _sgd_edge_a(B, d)
    return a_star * (1 - m * m) / (1 + m - a_star * m)


def _sgd_momentum_args(lr, momentum, batch_size, d, noise_var, reduction, where: str):
    lr = _real_array(lr, "lr", where)  # checked first, as the signature reads
    m = _momentum_array(momentum, where)
    a, B, d, s2 = _sgd_args(lr, batch_size, d, noise_var, reduction, where)
    return np.broadcast_arrays(a, m, B, d, s2)


def _sgd_momentum_stationary(lr, momentum, batch_size, d, noise_var, reduction, where: str):
    """(E‖w − w*‖², E(b − b*)²) of heavy-ball SGD at stationarity; inf from its stability edge on."""
    a, m, B, d, s2 = _sgd_momentum_args(lr, momentum, batch_size, d, noise_var, reduction, where)
    a_eff = _momentum_a_eff(a, m)
    # a < the edge in a, and a_eff < a* (the same condition, but kept consistent under rounding)
    stable = (a < _momentum_edge_a(m, B, d)) & (a_eff < _sgd_edge_a(B, d))
    return _sgd_fixed_point(a_eff, B, d, s2, stable)


def sgd_momentum_stationary_sq_error(lr, momentum, batch_size, d, noise_var, reduction="mean") -> np.ndarray:
    """E‖θ − θ*‖², θ = (w, b), where constant-lr minibatch SGD with heavy-ball momentum β on the
    ``squared`` loss settles, online (fresh examples every step): exactly
    :func:`sgd_stationary_sq_error` at the effective lr of :func:`sgd_momentum_effective_lr`,

        1/lr_eff = (1 − β)/lr + 2β/(1 + β)           (``mean``; 2Bβ/(1 + β) for ``sum``),

    which is lr/(1 − β) only in the small-step limit. It is the sum of
    :func:`sgd_momentum_stationary_w_err_sq` and :func:`sgd_momentum_stationary_b_err_sq`.

    The optimizer is torch.optim.SGD(momentum=β, dampening=0, nesterov=False): with g the
    minibatch gradient, buf ← β buf + g (buf = g at the first step) and θ ← θ − lr buf.

    Derivation (notation of :func:`sgd_stationary_sq_error`: e = θ − θ*, H and g the minibatch's
    mean Gram matrix and mean x̃ε, a = 2 lr for ``mean``, 2 lr B for ``sum``). lr buf_t =
    e_(t−1) − e_t, so the step is the heavy-ball recursion

        e_(t+1) = ((1 + β) I − a H_t) e_t − β e_(t−1) + a g_t.

    The pair (e_t, e_(t−1)) is a Markov chain whose second moments P = E e_t e_tᵀ,
    Q = E e_t e_(t−1)ᵀ, R = E e_(t−1) e_(t−1)ᵀ obey, with m = 1 + β − a and E H = I,

        P' = m² P + a² V(P) − β m (Q + Qᵀ) + β² R + a² σ² I / B,
        Q' = m P − β Qᵀ,    R' = P,

    where V(P) = E[(H − I) P (H − I)] = (K(P) − P)/B is plain SGD's, in the notation there (E H = I
    also gives E[(1 + β − a H) P] = m P). At stationarity R = P; Q − Qᵀ = β (Q − Qᵀ) forces Q = Qᵀ, so
    Q = m P / (1 + β), and P solves

        γ P = a² (V(P) + σ² I / B),
        γ = 1 − β² − m² (1 − β)/(1 + β) = a (1 − β)(2 (1 + β) − a)/(1 + β).

    Plain SGD with step a' satisfies the same equation with γ = a'(2 − a'). The two coincide when
    (2 − a')/a' = γ/a², that is

        1/a_eff = (1 − β)/a + β/(1 + β),    a_eff = a (1 + β) / (1 − β² + a β),

    so the stationary E e eᵀ (the whole matrix, not only its trace) of momentum SGD at lr is
    plain SGD's at lr_eff = a_eff/2 (``mean``) or a_eff/(2B) (``sum``), with plain SGD's fixed
    point (t, s) in closed form. This step uses only E H = I and the independence of the batch
    from the past; the Gaussian features enter through V, as for plain SGD. Only the one-time
    second moments agree: momentum's iterates are correlated differently in time (Q above).

    Small steps. a_eff = a/(1 − β) · (1 − aβ/(1 − β²) + O(a²)), so the floor → lr (d + 1) σ² /
    ((1 − β) B) (``mean``; lr → lr B for ``sum``), the w part lr d σ²/((1 − β) B): plain SGD's
    law at lr/(1 − β). To first order, with η = lr (``mean``) or lr B (``sum``), the w part is

        η d σ² / ((1 − β) B) · (1 + η/(1 + β) + η (d + 2) / ((1 − β) B) + O(η²)),

    (plain SGD's own growth, η/(1 − β) · (1 + (d + 2)/B), less the momentum correction
    2ηβ/(1 − β²); they partly cancel, so the bare small-step law is closer than plugging
    lr/(1 − β) into :func:`sgd_stationary_sq_error`). For B = 32, d = 2 the w part over the
    small-step law lr d σ²/((1 − β) B) is 1.009, 1.028, 1.101 at lr = 0.01, 0.03, 0.1 with
    β = 0.5, and 1.018, 1.056, 1.213 with β = 0.9; plain SGD's formula at lr/(1 − β) is instead
    too high by 1.4%, 4.3%, 17% (β = 0.5) and 11%, 43% and infinitely (β = 0.9: lr/(1 − β) = 1 is
    past plain SGD's edge). With B = 1 the (d + 2)/((1 − β) B) term dominates: at d = 2,
    β = 0.9, lr = 0.005 the floor is 1.25 times the small-step law. So the floor is the
    small-step law to within 5% while η/(1 + β) + η (d + 2)/((1 − β) B) ≲ 0.05 (to first order),
    and lr/(1 − β) is the effective lr to within 5% only while 2ηβ/(1 − β²) ≲ 0.05 (lr ≲ 0.005
    at β = 0.9, ``mean``);
    tests/test_theory.py checks these numbers and the exact form against simulation.

    Past :func:`sgd_momentum_stability_edge` (where a_eff reaches plain SGD's edge) the second
    moments grow without bound and this returns ``inf``. The assumptions and limits of
    :func:`sgd_stationary_sq_error` apply (``squared`` loss, Gaussian features, any zero-mean
    noise of variance σ², fresh examples each step).

    Parameters
    ----------
    lr : float or array, >= 0
    momentum : float or array, in [0, 1)
        β; 0 gives :func:`sgd_stationary_sq_error` exactly.
    batch_size, d, noise_var, reduction
        As for :func:`sgd_stationary_sq_error`.

    Returns
    -------
    float64 array: E‖θ − θ*‖²; ``inf`` where lr >= sgd_momentum_stability_edge(momentum,
    batch_size, d, reduction).

    Examples
    --------
    d2l's setting (noise 0.01, lr 0.03, batch 32, w of 2 entries) with momentum 0.9; the
    small-step law lr (d + 1) σ² / ((1 − β) B) would say 2.81e-06:

    >>> float(sgd_momentum_stationary_sq_error(0.03, 0.9, 32, 2, noise_variance(0.01)))
    2.9515...e-06
    """
    w_part, b_part = _sgd_momentum_stationary(
        lr, momentum, batch_size, d, noise_var, reduction, "parameter of sgd_momentum_stationary_sq_error"
    )
    return _result(w_part + b_part)


def sgd_momentum_stationary_w_err_sq(lr, momentum, batch_size, d, noise_var, reduction="mean") -> np.ndarray:
    """The w part of :func:`sgd_momentum_stationary_sq_error`: E‖w − w*‖² at stationarity, that is
    sgd_stationary_w_err_sq(sgd_momentum_effective_lr(lr, momentum, batch_size, reduction), ...);
    → lr d σ²/((1 − β) B) for small lr (``mean``)."""
    return _sgd_momentum_stationary(
        lr, momentum, batch_size, d, noise_var, reduction, "parameter of sgd_momentum_stationary_w_err_sq"
    )[0]


def sgd_momentum_stationary_b_err_sq(lr, momentum, batch_size, d, noise_var, reduction="mean") -> np.ndarray:
    """The intercept part of :func:`sgd_momentum_stationary_sq_error`: E(b − b*)² at
    stationarity, plain SGD's at the effective lr; → lr σ²/((1 − β) B) for small lr (``mean``)."""
    return _sgd_momentum_stationary(
        lr, momentum, batch_size, d, noise_var, reduction, "parameter of sgd_momentum_stationary_b_err_sq"
    )[1]


def sgd_momentum_effective_lr(lr, momentum, batch_size, reduction="mean") -> np.ndarray:
    """The lr at which plain SGD (same batch size and reduction) has the stationary second moment
    of heavy-ball SGD at lr and momentum β (derivation in :func:`sgd_momentum_stationary_sq_error`):

        lr_eff = lr (1 + β) / (1 − β² + 2 η β),    η = lr (``mean``) or lr B (``sum``),

    i.e. 1/lr_eff = (1 − β)/lr + 2β/(1 + β) for ``mean``. It is lr/(1 − β) as lr → 0, and below
    it by the factor 1/(1 + 2ηβ/(1 − β²)): 0.88 at lr = 0.1, β = 0.5 and 0.51 at lr = 0.1, β = 0.9
    (``mean``). It does not depend on d or on the noise, and batch_size matters only for ``sum``.
    """
    where = "parameter of sgd_momentum_effective_lr"
    a, m, B, _, _ = _sgd_momentum_args(lr, momentum, batch_size, 1, 0.0, reduction, where)
    return _result(_momentum_a_eff(a, m) / 2 / np.where(np.asarray(reduction) == "sum", B, 1.0))


def sgd_momentum_stability_edge(momentum, batch_size, d, reduction="mean") -> np.ndarray:
    """The largest lr for which online heavy-ball SGD (momentum β) on the ``squared`` loss has a
    finite stationary second moment: where its effective lr reaches :func:`sgd_stability_edge`,

        a_edge = a* (1 − β²) / (1 + β − a* β),    a* = 4B / (2B + d + 1 + sqrt(d² + 6d + 1)),

    and lr = a_edge/2 (``mean``) or a_edge/(2B) (``sum``). β = 0 gives :func:`sgd_stability_edge`;
    for B = 32, d = 2 it is 0.90, 1.12, 0.61 and 0.086 at β = 0, 0.5, 0.9 and 0.99 (``mean``):
    it first rises, then falls to 0 as β → 1, like (1 − β) lr*/(1 − lr*) with lr* =
    sgd_stability_edge(B, d) (``mean``): there 1/(1 − lr*) times (10 times, for B = 32, d = 2)
    the edge lr* (1 − β) that the naive effective lr lr/(1 − β) would give.

    Why this is the edge: below it the fixed point is the unique, positive one of plain SGD at
    a_eff < a*; the momentum recursion's second-moment operator is not a positive map, so
    Perron-Frobenius does not give this directly, and tests/test_theory.py checks, on the exact
    operator on the joint moments of (e_t, e_(t−1)) for β up to 0.99, that its spectral radius
    crosses 1 here and is below 1 on a grid of lr below.

    Returns
    -------
    float64 array of lr values.
    """
    where = "parameter of sgd_momentum_stability_edge"
    m = _momentum_array(momentum, where)
    B = _int_array(batch_size, "batch_size", where, low=1)
    d = _int_array(d, "d", where, low=1)
    reduction = _choice_array(reduction, "reduction", where, REDUCTIONS)
    m, B, d, reduction = np.broadcast_arrays(m, B, d, reduction)
    return _result(_momentum_edge_a(m, B, d) / 2 / np.where(reduction == "sum", B, 1.0))


def averaged_sgd_w_err_sq(num_train, d, noise_var) -> np.ndarray:
    """E‖w̄ − w‖² of the average of SGD's iterates, asymptotically: σ² d / n.

    Polyak & Juditsky (1992): averaged SGD attains the optimal asymptotic covariance σ² H⁻¹ / n,
    H = E[x xᵀ] the features' second moment (here I_d, and the intercept's feature 1 decouples:
    E x = 0), so E‖w̄ − w‖² → σ² tr(H⁻¹) / n = σ² d / n; Bach & Moulines (2013) give the same
    O(σ² d / n) for averaged constant-step SGD on least squares. It is least squares' own error,
    σ² d / (n − d − 2) (:func:`ols_w_err_sq_mean`), to O(d / n): averaging leaves nothing of
    SGD's noise floor. It holds once the average has forgotten the start, which an average over
    every step from the first does not (the transient stays in it): tail averaging, after the
    iterates reached the floor. tests/test_theory.py checks it against the engine's runs.
    """
    n, d, noise_var = _ols_args(num_train, d, noise_var, "parameter of averaged_sgd_w_err_sq")
    return _result(noise_var * d / n)


def weight_decay_w_err_sq(num_train, d, noise_var, weight_decay, w_norm_sq) -> np.ndarray:
    """E‖ŵ − w‖² of the estimator SGD with weight decay λ (on the weight, as torch.optim.SGD adds
    λw to the gradient of the ``squared`` loss, MSELoss) settles on, for n ≫ d: bias² + variance
    of ridge regression with α = nλ/2.

    Derivation. The full-batch gradient of the mean r² is (2/n) Aᵀ(Aθ − y); with λw added (not
    to b), its zero is, after profiling out the undecayed intercept, the ridge solution on the
    centred design: ŵ = (W + αI)⁻¹ X_cᵀ y_c, W = X_cᵀ X_c, α = nλ/2. Given X, E ŵ − w =
    −α (W + αI)⁻¹ w and Cov ŵ = σ² (W + αI)⁻¹ W (W + αI)⁻¹. In the regime where a closed form
    holds, n ≫ d, W ≈ (n − 1) I (its mean; its fluctuations are O(√n) an entry, so the error is
    O(√(d/n)) relative), and
    E‖ŵ − w‖² ≈ (α / (n − 1 + α))² ‖w‖² + σ² d (n − 1) / (n − 1 + α)².
    At λ = 0 it is σ² d / (n − 1), least squares' to O(d/n). SGD reaches that point on average;
    its last iterate adds its noise floor, its average does not (see averaged_sgd_w_err_sq). For
    d ≈ n (d2l §3.7: d = 200, n = 20) no closed form is drawn: W is far from (n − 1) I there.
    """
    where = "parameter of weight_decay_w_err_sq"
    n, d, noise_var = _ols_args(num_train, d, noise_var, where)
    lam = _real_array(weight_decay, "weight_decay", where)
    w2 = _real_array(w_norm_sq, "w_norm_sq", where)
    alpha = n * lam / 2
    m = n - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return _result((alpha / (m + alpha)) ** 2 * w2 + noise_var * d * m / (m + alpha) ** 2)
