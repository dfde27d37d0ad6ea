"""The batched engine: a chunk of K runs trained at once, exactly as the reference trains them.

A chunk's runs share num_train, batch_size, num_val, w and b (hence the step schedule); each
has its own lr, loss, sigma, reduction and random stream. Parameters are stacked, weights
(K, d) and biases (K,), and every SGD step is a handful of tensor operations on all K runs.
Gradients are analytic (the same formulas autograd applies to MSELoss and SmoothL1Loss).

Random streams are the reference's: each distinct stream (runs that differ only in lr, loss,
sigma or reduction share one) builds its SyntheticRegressionData from the run's seed on the
CPU, draws its initial weight and then one permutation per epoch from the same generator.

Every operation is elementwise or reduces within one run, so a run's numbers do not depend on
the other runs of its chunk: chunking changes nothing, and a diverging run (inf, NaN) cannot
contaminate its neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .data import SyntheticRegressionData
from .grid import Run
from .model import LinearRegression, draw_initial_weight
from .theory import least_squares
from .train import Trainer

__all__ = ["ChunkResult", "estimated_seconds", "train_batched", "train_reference", "ENGINES", "CHUNK_MEMORY_BUDGET", "max_chunk_runs"]

ENGINES = ("batched", "reference")
#: A run has diverged at a checkpoint once ŵ, b̂ or its training loss is not finite, or its
#: training loss exceeds this many times its value at the start. A run that converges never
#: comes near that; one that diverges gets there within a few steps, and from then on its
#: numbers are amplified rounding, which no two implementations share.
DIVERGENCE_FACTOR = 100.0
#: Bytes one chunk may hold on its device. With one chunk per worker this bounds a grid's
#: memory by workers x budget, however many runs the grid has.
CHUNK_MEMORY_BUDGET = 128 * 2**20


def max_chunk_runs(num_train: int, num_val: int, num_inputs: int, budget: int = CHUNK_MEMORY_BUDGET) -> int:
    """How many runs of this size fit one chunk's memory budget (at least 1).

    Per run the engine holds its examples z = (x, 1, y), n_total x (d + 2) floats, its own copy
    for the checkpoints, a shuffled copy of the training part, and at checkpoints vectors of
    n_total: about 4 (d + 2) n_total float32 numbers.
    """
    per_run = 4 * (num_inputs + 2) * (num_train + num_val) * 4
    return max(1, budget // per_run)


def estimated_seconds(num_train: int, batch_size: int, runs: int, max_epoch: int) -> float:
    """Rough CPU time of a chunk with one thread: a fixed cost per SGD step (Python and kernel
    launches, ~60 µs) and a cost per run-step (~0.4 µs), measured on this project's 2-core
    machine. Used only to decide whether worker processes pay for their start-up."""
    steps = max_epoch * math.ceil(num_train / batch_size)
    return steps * (60e-6 + 0.4e-6 * runs) + 1e-4 * runs


@dataclass
class ChunkResult:
    """What a chunk of R runs gives at its C checkpoints, runs in the chunk's order."""

    w_hat: np.ndarray  # (R, C, d)
    b_hat: np.ndarray  # (R, C)
    train_loss: np.ndarray  # (R, C) mean per-example training loss
    val_mse: np.ndarray  # (R, C)
    grad_w: np.ndarray  # (R, C, d) full-batch gradient of train_loss
    grad_b: np.ndarray  # (R, C)
    steps: np.ndarray  # (C,) SGD updates so far
    ols_w: np.ndarray  # (R, d) least squares on the run's training data, float64
    ols_b: np.ndarray  # (R,)
    w_true: np.ndarray  # (d,) the float32 truth the data were generated with, as float64
    b_true: float

    @property
    def diverged(self) -> np.ndarray:
        """(R, C) bool, sticky: see DIVERGENCE_FACTOR. Checkpoint 0 is the start."""
        with np.errstate(invalid="ignore"):
            gone = ~(np.isfinite(self.w_hat).all(-1) & np.isfinite(self.b_hat) & np.isfinite(self.train_loss))
            gone |= self.train_loss > DIVERGENCE_FACTOR * self.train_loss[:, :1]
        return np.logical_or.accumulate(gone, axis=1)


def _check_chunk(runs: Sequence[Run], checkpoints: Sequence[int]) -> None:
    if list(checkpoints) != sorted(set(checkpoints)) or not checkpoints or checkpoints[0] != 0:
        raise ValueError(f"Checkpoints must be sorted, distinct epochs starting at 0; got {list(checkpoints)}.")
    if not runs:
        raise ValueError("A chunk needs at least one run.")
    shared = {(r.num_train, r.batch_size, r.num_val, r.w, r.b) for r in runs}
    if len(shared) > 1:
        raise ValueError("The runs of a chunk must share num_train, batch_size, num_val, w and b.")


def _make_data(run: Run) -> SyntheticRegressionData:
    return SyntheticRegressionData(
        w=list(run.w), b=run.b, noise=run.noise, num_train=run.num_train, num_val=run.num_val,
        batch_size=run.batch_size, noise_kind=run.noise_kind, seed=run.seed,
    )


def _ols(datas: Sequence[SyntheticRegressionData]) -> tuple[np.ndarray, np.ndarray]:
    X = torch.stack([d.X_train for d in datas])  # (S, n, d)
    y = torch.stack([d.y_train for d in datas])  # (S, n, 1)
    w, b = least_squares(X, y)
    return w.numpy(), b.numpy()


def _truth(data: SyntheticRegressionData) -> tuple[np.ndarray, float]:
    return data.w.double().numpy(), float(torch.tensor(data.b, dtype=torch.float32))


def train_reference(runs: Sequence[Run], checkpoints: Sequence[int], device: str = "cpu") -> ChunkResult:
    """Train each run with the reference :class:`~study.train.Trainer`, one at a time (CPU)."""
    _check_chunk(runs, checkpoints)
    max_epoch = max(checkpoints)
    datas, histories = [], []
    for run in runs:
        data = _make_data(run)
        model = LinearRegression(run.lr, loss=run.loss, sigma=run.sigma, reduction=run.reduction)
        trainer = Trainer(max_epoch).fit(model, data)
        datas.append(data)
        histories.append([trainer.history[c] for c in checkpoints])
    ols_w, ols_b = _ols(datas)
    w_true, b_true = _truth(datas[0])

    def stack(attr: str) -> np.ndarray:
        return np.array([[np.asarray(getattr(c, attr), dtype=np.float64) for c in h] for h in histories])

    return ChunkResult(
        w_hat=stack("w_hat"), b_hat=stack("b_hat"), train_loss=stack("train_loss"), val_mse=stack("val_mse"),
        grad_w=stack("grad_w"), grad_b=stack("grad_b"),
        steps=np.array([c.steps for c in histories[0]], dtype=np.int64),
        ols_w=ols_w, ols_b=ols_b, w_true=w_true, b_true=b_true,
    )


@torch.no_grad()
def train_batched(runs: Sequence[Run], checkpoints: Sequence[int], device: str | torch.device = "cpu") -> ChunkResult:
    """Train a chunk of runs at once on one device; the numbers are the reference's.

    Parameters
    ----------
    runs : sequence of Run
        Runs sharing num_train, batch_size, num_val, w and b.
    checkpoints : sequence of int
        Epochs to record, sorted and starting with 0 (the start). Training goes to the largest.
    device : str or torch.device, default="cpu"

    Notes
    -----
    Each example is stored as z = (x, 1, y) and each run's parameters as θ = (w, b, −1), so
    that one product and one sum give the residual r = z·θ = xw + b − y, and one more the
    update of (w, b). The derivative of the loss is clamp(s·r, lo, hi): s = 2, lo/hi = ∓inf
    for squared; s = 1/σ, lo/hi = ∓1 for Huber (3.5.1). Each step is then a handful of small
    kernels, whatever mix of losses the chunk holds.
    """
    _check_chunk(runs, checkpoints)
    device = torch.device(device)
    n, bs = runs[0].num_train, runs[0].batch_size
    K = len(runs)

    # One data set, start and permutation stream per distinct seed (common random numbers).
    stream_of_seed: dict[int, int] = {}
    run_stream = torch.tensor([stream_of_seed.setdefault(r.seed, len(stream_of_seed)) for r in runs])  # (K,)
    datas: dict[int, SyntheticRegressionData] = {}
    for run in runs:
        datas.setdefault(run.seed, _make_data(run))
    datas_ = list(datas.values())
    d = datas_[0].num_inputs
    starts = torch.cat([draw_initial_weight(d, data.generator) for data in datas_])  # (S, d)
    Z = torch.stack([torch.cat([data.X, torch.ones_like(data.y), data.y], 1).T for data in datas_]).to(device)  # (S, d+2, n_total)
    index = run_stream.to(device)
    # Runs sharing a stream read its data through `index`; each run's own copy is made once,
    # for the full-batch checkpoints (the steps copy only the minibatch they use).
    shared = len(datas_) < K
    ZK = Z.index_select(0, index) if shared else Z  # (K, d+2, n_total)

    theta = torch.zeros(K, d + 2, device=device)  # (K, d+2) = (w, b, -1)
    theta[:, :d] = starts[run_stream].to(device)
    theta[:, d + 1] = -1.0
    huber = torch.tensor([r.loss == "huber" for r in runs], device=device)[:, None]  # (K, 1)
    sigma = torch.tensor([r.sigma for r in runs], device=device)[:, None]
    scale = torch.where(huber, 1 / sigma, torch.full_like(sigma, 2.0))
    hi = torch.where(huber, torch.ones_like(sigma), torch.full_like(sigma, math.inf))
    lo = -hi
    lr = torch.tensor([r.lr for r in runs], device=device)[:, None]
    is_mean = torch.tensor([r.reduction == "mean" for r in runs], device=device)[:, None]

    any_huber = bool(huber.any())

    def per_example_loss(r: torch.Tensor) -> torch.Tensor:
        sq = r.square()
        if not any_huber:
            return sq
        a = r.abs()
        return torch.where(huber, torch.where(a > sigma, a - sigma / 2, sq / (2 * sigma)), sq)

    record = _Recorder()

    def checkpoint(steps: int) -> None:
        r = torch.bmm(theta[:, None, :], ZK)[:, 0]  # (K, n_total): one product per run, no temporaries
        r_train, r_val = r[:, :n], r[:, n:]
        g = torch.clamp(r_train * scale, lo, hi) / n  # (K, n) d(mean loss)/dr
        grad = torch.bmm(ZK[:, : d + 1, :n], g[:, :, None])[:, :, 0]  # (K, d+1)
        record.add(theta[:, :d], theta[:, d], per_example_loss(r_train).mean(1), r_val.square().mean(1),
                   grad[:, :d], grad[:, d], steps)

    # Minibatches are bs wide; the ragged last one is padded with z = 0, which adds exactly 0
    # to every sum. Step sizes: −lr/m for `mean` (m the minibatch's true size), −lr for `sum`.
    T = math.ceil(n / bs)
    sizes = [min(bs, n - t * bs) for t in range(T)]
    step_size = {m: -torch.where(is_mean, lr / m, lr) for m in set(sizes)}  # (K, 1)
    Zpad = torch.cat([Z, torch.zeros_like(Z[:, :, :1])], 2)  # (S, d+2, n_total + 1)
    pad = torch.full((len(datas_), T * bs - n), Z.shape[2], device=device)
    wanted = set(checkpoints)
    steps = 0
    checkpoint(steps)
    for epoch in range(1, max(checkpoints) + 1):
        order = torch.cat([torch.stack([data.permutation() for data in datas_]).to(device), pad], 1)  # (S, T*bs)
        Zp = torch.gather(Zpad, 2, order[:, None, :].expand(-1, d + 2, -1))  # (S, d+2, T*bs)
        Zp = Zp.view(-1, d + 2, T, bs).permute(2, 0, 1, 3).contiguous()  # (T, S, d+2, bs): a step's block is contiguous
        for t, m in enumerate(sizes):
            Zb = Zp[t]  # (S, d+2, bs)
            if shared:
                Zb = Zb.index_select(0, index)  # (K, d+2, bs)
            r = (Zb * theta[:, :, None]).sum(1)  # (K, bs) residuals
            g = torch.clamp(r.mul_(scale), lo, hi).mul_(step_size[m])  # (K, bs)
            theta[:, : d + 1] += (Zb[:, : d + 1] * g[:, None, :]).sum(2)
        steps += T
        if epoch in wanted:
            checkpoint(steps)

    ols_w, ols_b = _ols(datas_)
    w_true, b_true = _truth(datas_[0])
    idx = run_stream.numpy()
    return record.result(ols_w[idx], ols_b[idx], w_true, b_true)


class _Recorder:
    """Collects checkpoints on the device and copies them to the host once, at the end."""

    def __init__(self) -> None:
        self.parts: list[tuple[torch.Tensor, ...]] = []
        self.steps: list[int] = []

    def add(self, W, B, train_loss, val_mse, grad_w, grad_b, steps: int) -> None:
        self.parts.append(tuple(t.clone() for t in (W, B, train_loss, val_mse, grad_w, grad_b)))
        self.steps.append(steps)

    def result(self, ols_w, ols_b, w_true, b_true) -> ChunkResult:
        cols = [torch.stack(c, dim=1).cpu().double().numpy() for c in zip(*self.parts)]  # (K, C, ...)
        return ChunkResult(
            w_hat=cols[0], b_hat=cols[1], train_loss=cols[2], val_mse=cols[3], grad_w=cols[4], grad_b=cols[5],
            steps=np.array(self.steps, dtype=np.int64), ols_w=ols_w, ols_b=ols_b, w_true=w_true, b_true=b_true,
        )

