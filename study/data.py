"""Synthetic linear-regression data, as d2l's SyntheticRegressionData, made reproducible.

A data set's random numbers come from its seed through one of two streams (``stream=``):

``counter`` (the default): Philox4x32-10 counter-based numbers (:mod:`study.streams`). Each
number is a pure function of the seed, its purpose, the epoch and its index, so the data of
many runs are drawn at once on any device (:func:`draw_counter_data`), and a run's numbers
are the same on a CPU and a GPU. Features, noise, the noise kind's extra draws, the initial
weight and each epoch's permutation each have their own purpose (``streams.PURPOSES``).

``torch``: the data set owns one ``torch.Generator`` (on the CPU). Everything random about a run
is drawn from it, in this order, the book's own sequence:

1. the features ``X`` of all ``num_train + num_val`` examples, ``(n, d)`` standard normal;
2. the standard-normal noise draws ``(n, 1)``;
3. the extra draws of the noise kind (none for ``gaussian``; see NOISE_KINDS);
4. the model's initial weight, drawn by the trainer (``study.model.draw_initial_weight``);
5. one permutation of the training examples per epoch, ``torch.randperm(num_train)``.

The first ``num_train`` rows are the training set, the rest the validation set.
"""

from __future__ import annotations

import torch

from . import streams
from ._checks import check_choice, check_int, check_real, check_vector, fail
from .vocabulary import NOISE_KINDS, STREAMS

__all__ = ["SyntheticRegressionData"]

#: ``gaussian``: noise · N(0, 1), as in d2l.
#: ``student_t``: noise · t with STUDENT_T_DF degrees of freedom (heavy tails, variance 3·noise²).
#: ``outliers``: gaussian noise, and in addition a fraction OUTLIER_FRACTION of the *training*
#: labels gets a gross error drawn from N(0, OUTLIER_SCALE²); the validation labels stay clean,
#: so that validation MSE still measures how well the true line was found.
STUDENT_T_DF = 3
OUTLIER_FRACTION = 0.1
OUTLIER_SCALE = 10.0
#: The initial weight's standard deviation, N(0, 0.01²) as in d2l (see study.model).
INIT_STD = 0.01


def draw_counter_data(
    seeds: torch.Tensor, w: torch.Tensor, b: float, noise: float, noise_kind: str, num_train: int, num_val: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The counter stream's data of S seeds at once, on the seeds' device.

    Returns X (S, n, d) and y (S, n) float32, n = num_train + num_val. Every operation is
    elementwise or runs over one example's own numbers, in a fixed order, so a seed's data
    are the same bits whether it is drawn alone or beside others.
    """
    S, n, d = seeds.shape[0], num_train + num_val, w.shape[0]
    w = w.to(seeds.device, torch.float32)
    X = streams.normals(seeds, "features", n * d).view(S, n, d)
    eps = streams.normals(seeds, "noise", n)  # (S, n)
    if noise_kind == "student_t":
        z = streams.normals(seeds, "chi2", n * STUDENT_T_DF).view(S, n, STUDENT_T_DF)
        chi2 = z[..., 0].square()
        for k in range(1, STUDENT_T_DF):
            chi2 = chi2 + z[..., k].square()
        eps = eps / torch.sqrt(chi2 / STUDENT_T_DF)
    y = X[..., 0] * w[0]
    for j in range(1, d):  # an explicit sum, in one order for any S (a matmul's blocking may vary)
        y = y + X[..., j] * w[j]
    y = y + b
    y = y + noise * eps
    if noise_kind == "outliers":
        hit = streams.uniforms(seeds, "outlier_hit", num_train) < OUTLIER_FRACTION
        gross = OUTLIER_SCALE * streams.normals(seeds, "outlier_size", num_train)
        y[:, :num_train] += torch.where(hit, gross, torch.zeros_like(gross))
    return X, y


def counter_initial_weights(seeds: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """(S, d) initial weights of the counter stream, N(0, INIT_STD²)."""
    return INIT_STD * streams.normals(seeds, "init", num_inputs)


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
    stream : {"counter", "torch"}, default="counter"
        Where the random numbers come from (see the module's docstring).
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
        stream: str = "counter",
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
        if self.seed >= 2**63:  # the counter stream keeps seeds in int64 tensors
            fail("seed", where, "an integer in [0, 2**63)", seed)
        self.stream = check_choice(stream, "stream", where, STREAMS)
        self._epoch = 0
        if self.stream == "torch":
            self.generator: torch.Generator | None = torch.Generator().manual_seed(self.seed)
            self.X, self.y = self._draw()
        else:
            self.generator = None
            X, y = draw_counter_data(
                torch.tensor([self.seed]),
                self.w.float(),
                self.b,
                self.noise,
                self.noise_kind,
                self.num_train,
                self.num_val,
            )
            self.X, self.y = X[0], y[0, :, None]

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

    def initial_weight(self) -> torch.Tensor:
        """The model's starting weight (1, d) ~ N(0, INIT_STD²): for ``torch``, draw 4 of the
        documented order (so call it once, before the first permutation)."""
        if self.stream == "torch":
            return torch.normal(0.0, INIT_STD, size=(1, self.num_inputs), generator=self.generator)
        return counter_initial_weights(torch.tensor([self.seed]), self.num_inputs)

    def permutation(self) -> torch.Tensor:
        """The next epoch's order of the training examples (epochs count from 1)."""
        self._epoch += 1
        if self.stream == "torch":
            return torch.randperm(self.num_train, generator=self.generator)  # draw 5 of the documented order
        return streams.permutations(torch.tensor([self.seed]), self.num_train, self._epoch)[0]

    def __repr__(self) -> str:
        return (
            f"SyntheticRegressionData(w={self.w.tolist()}, b={self.b}, noise={self.noise}, "
            f"num_train={self.num_train}, num_val={self.num_val}, batch_size={self.batch_size}, "
            f"noise_kind={self.noise_kind!r}, seed={self.seed}, stream={self.stream!r})"
        )
