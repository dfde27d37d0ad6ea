"""Synthetic linear-regression data, as d2l's SyntheticRegressionData, made reproducible.

Each data set owns one ``torch.Generator``. Everything random about a run is drawn from it, in
this order, so that a run is reproduced by its seed alone:

1. the features ``X`` of all ``num_train + num_val`` examples, ``(n, d)`` standard normal;
2. the standard-normal noise draws ``(n, 1)``;
3. the extra draws of the noise kind (none for ``gaussian``; see NOISE_KINDS);
4. the model's initial weight, drawn by the trainer (``study.model.draw_initial_weight``);
5. one permutation of the training examples per epoch, ``torch.randperm(num_train)``.

The first ``num_train`` rows are the training set, the rest the validation set.
"""

from __future__ import annotations

import torch

from ._checks import check_choice, check_int, check_real, check_vector

__all__ = [
    "SyntheticRegressionData",
    "NOISE_KINDS",
    "STUDENT_T_DF",
    "OUTLIER_FRACTION",
    "OUTLIER_SCALE",
]

#: ``gaussian``: noise · N(0, 1), as in d2l.
#: ``student_t``: noise · t with STUDENT_T_DF degrees of freedom (heavy tails, variance 3·noise²).
#: ``outliers``: gaussian noise, and in addition a fraction OUTLIER_FRACTION of the *training*
#: labels gets a gross error drawn from N(0, OUTLIER_SCALE²); the validation labels stay clean,
#: so that validation MSE still measures how well the true line was found.
NOISE_KINDS = ("gaussian", "student_t", "outliers")
STUDENT_T_DF = 3
OUTLIER_FRACTION = 0.1
OUTLIER_SCALE = 10.0


class SyntheticRegressionData:
    """Synthetic data y = Xw + b + noise with X ~ N(0, I), d2l's defaults.

    Parameters
    ----------
    w : sequence of float or tensor
        The true weights; their number is the number of features d.
    b : float
        The true bias.
    noise : float, default=0.01
        Scale of the label noise (the standard deviation for ``gaussian``).
    num_train, num_val : int, default=1000
        Sizes of the training and validation sets.
    batch_size : int, default=32
        Minibatch size for training (the last minibatch is ragged when it does not divide).
    noise_kind : {"gaussian", "student_t", "outliers"}, default="gaussian"
    seed : int, optional
        Seeds this data set's generator. When None, a seed is drawn from torch's global
        generator, so ``torch.manual_seed`` makes even an unseeded data set repeatable.

    Examples
    --------
    >>> data = SyntheticRegressionData(w=[2, -3.4], b=4.2, seed=0)
    >>> data.X_train.shape, data.y_train.shape
    (torch.Size([1000, 2]), torch.Size([1000, 1]))
    """

    def __init__(
        self,
        w,
        b: float,
        noise: float = 0.01,
        num_train: int = 1000,
        num_val: int = 1000,
        batch_size: int = 32,
        noise_kind: str = "gaussian",
        seed: int | None = None,
    ) -> None:
        where = "parameter of SyntheticRegressionData"
        self.w = torch.tensor(check_vector(w, "w", where))
        self.b = check_real(b, "b", where, low=-float("inf"))
        self.noise = check_real(noise, "noise", where, low=0.0, strict=False)
        self.num_train = check_int(num_train, "num_train", where, low=1)
        self.num_val = check_int(num_val, "num_val", where, low=1)
        self.batch_size = check_int(batch_size, "batch_size", where, low=1)
        self.noise_kind = check_choice(noise_kind, "noise_kind", where, NOISE_KINDS)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.seed = check_int(seed, "seed", where, low=0)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.X, self.y = self._draw()

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        g, n, d = self.generator, self.num_train + self.num_val, len(self.w)
        X = torch.randn(n, d, generator=g)  # (n, d)
        eps = torch.randn(n, 1, generator=g)  # (n, 1)
        if self.noise_kind == "student_t":
            # t = Z / sqrt(chi2_df / df), chi2_df as a sum of df squared normals, so that the
            # draw uses only this generator (torch.distributions cannot take one).
            chi2 = torch.randn(n, STUDENT_T_DF, generator=g).square().sum(1, keepdim=True)
            eps = eps / torch.sqrt(chi2 / STUDENT_T_DF)
        y = X @ self.w.reshape(-1, 1) + self.b + self.noise * eps  # (n, 1)
        if self.noise_kind == "outliers":
            hit = torch.rand(self.num_train, 1, generator=g) < OUTLIER_FRACTION
            gross = OUTLIER_SCALE * torch.randn(self.num_train, 1, generator=g)
            y[: self.num_train] += torch.where(hit, gross, torch.zeros_like(gross))
        return X, y

    @property
    def num_inputs(self) -> int:
        return len(self.w)

    @property
    def X_train(self) -> torch.Tensor:
        return self.X[: self.num_train]

    @property
    def y_train(self) -> torch.Tensor:
        return self.y[: self.num_train]

    @property
    def X_val(self) -> torch.Tensor:
        return self.X[self.num_train :]

    @property
    def y_val(self) -> torch.Tensor:
        return self.y[self.num_train :]

    def permutation(self) -> torch.Tensor:
        """The next epoch's order of the training examples (draw 5 of the documented order)."""
        return torch.randperm(self.num_train, generator=self.generator)

    def __repr__(self) -> str:
        return (
            f"SyntheticRegressionData(w={self.w.tolist()}, b={self.b}, noise={self.noise}, "
            f"num_train={self.num_train}, num_val={self.num_val}, batch_size={self.batch_size}, "
            f"noise_kind={self.noise_kind!r}, seed={self.seed})"
        )
