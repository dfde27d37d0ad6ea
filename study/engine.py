"""The batched engine: a chunk of K runs trained at once, exactly as the reference trains them.

A chunk's runs share num_train, batch_size, num_val, w, b and the stream setting (hence the
step schedule); each has its own lr, loss, sigma, reduction and random stream. The runs of one
stream (those that differ only in lr, loss, sigma or reduction: common random numbers) are laid
out together: S streams of m runs each (a stream with fewer runs is padded with idle slots), so
that a stream's data are stored once and read by its m runs. The steps hold the parameters
runs-last, (d + 2, m, S), so that every operation runs over contiguous runs; the checkpoints
take them as (S, m, d + 2).
Gradients are analytic (the same formulas autograd applies to MSELoss and SmoothL1Loss).

Random streams: with ``stream="counter"`` the data, starts and permutations of all S streams
are drawn at once on the chunk's device (:func:`study.data.draw_counter_data`,
:mod:`study.streams`); with ``stream="torch"`` each stream builds its SyntheticRegressionData
from its seed on the CPU, draws its start and then one permutation per epoch from its generator.

Every floating-point operation is elementwise: the sums are written out as adds in an order
fixed by their length (:mod:`study.sums`), never a reduction kernel, whose order depends on the
tensor's shape. So a run's numbers do not depend on the other runs of its chunk: chunking
changes nothing, bit for bit on a CPU and on a GPU, and a diverging run (inf, NaN) cannot
contaminate its neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from . import gpu_kernels, kernels, streams
from .data import SyntheticRegressionData, counter_initial_weights, draw_counter_data
from .grid import Run
from .model import LinearRegression
from .options import DEFAULT, Options
from .plan import Chunk
from .sums import tree_levels, tree_sum_
from .theory import least_squares, least_squares_from_moments
from .train import Trainer

__all__: list[str] = []  # private: see study/__init__.py

#: A run has diverged at a checkpoint once ŵ, b̂ or its training loss is not finite, or its
#: training loss exceeds this many times its value at the start. A run that converges never
#: comes near that; one that diverges gets there within a few steps, and from then on its
#: numbers are amplified rounding, which no two implementations share.
DIVERGENCE_FACTOR = 100.0
#: Bytes one chunk may hold on a CPU by default (study.options.Options.chunk_memory_budget).
CHUNK_MEMORY_BUDGET = DEFAULT.chunk_memory_budget


def chunk_bytes(num_train: int, num_val: int, num_inputs: int, runs: int, streams_: int) -> int:
    """Bytes a chunk of ``runs`` runs over ``streams_`` streams holds on its device, at most.

    Per stream: its examples z = (x, 1, y), n_total x (d + 2) float32, the epoch's shuffled copy
    of the training part and its order (int64, and the sort's keys): about 8 (d + 2) n_total + 24
    n_total bytes; and its second moments (three (d + 2)² float64). Per run: at a checkpoint its
    residuals and their derivatives and one product, n_total float32 each, 12 n_total bytes, and
    (d + 2)² float64 products, three at once; and per step a few (d + 2) x batch_size temporaries.
    """
    n_total = num_train + num_val
    square = 8 * (num_inputs + 2) ** 2
    per_stream = (8 * (num_inputs + 2) + 24) * n_total + 3 * square
    per_run = 12 * n_total + 64 * (num_inputs + 2) + 3 * square
    return per_stream * streams_ + per_run * runs


def max_chunk_runs(
    num_train: int, num_val: int, num_inputs: int, budget: int = CHUNK_MEMORY_BUDGET, runs_per_stream: int = 1
) -> int:
    """How many runs of this size fit one chunk's memory budget (at least one stream's)."""
    per = chunk_bytes(num_train, num_val, num_inputs, runs_per_stream, 1)
    return max(runs_per_stream, budget // per * runs_per_stream)


def estimated_seconds(num_train: int, batch_size: int, runs: int, max_epoch: int, num_val: int = 1000) -> float:
    """Rough CPU time of a chunk with one thread, fitted (least squares, relative error) to
    chunks of the W mix on this project's 2-core machine, 6 to 6,000 runs of 5 to 10,000
    examples (engine revision 3), within -33%/+26% below the memory budget's chunk size: a
    fixed cost per chunk (drawing, checkpoints, least squares: ~4.6 ms), a cost per SGD step (its
    dispatches, ~19 µs), per run-step (~0.30 µs: the step, and per epoch the permutations and
    the minibatches' gather, which grow with S·n) and per run (~11 µs).
    Used to balance chunks over workers, to decide whether workers pay for their start-up and
    whether a GPU does, and for the time left in progress lines."""
    steps = max_epoch * math.ceil(num_train / batch_size)
    return 4.6e-3 + steps * (19e-6 + 0.30e-6 * runs) + 11e-6 * runs


def past_stability_edge(lr, loss, sigma, reduction, batch_size, num_train, num_inputs: int = 2) -> np.ndarray:
    """Runs whose steps put them near or past SGD's stability edge, where they bounce
    chaotically and amplify rounding: two implementations (a CPU and a GPU) then agree only
    statistically, not number for number.

    The rule: η·c·(1 + sqrt((d + 1)/b))² >= 2. Here b = min(batch_size, num_train) is the
    minibatch, η the step per unit of mean gradient (lr for ``mean``, lr·b for ``sum``) and c the
    loss's curvature (2 for ``squared``, MSELoss; 1/σ for ``huber`` in its quadratic zone), on
    features whose second moment is the identity. Full-batch gradient descent is stable for
    η·c < 2; a minibatch's Gram matrix has its largest eigenvalue near (1 + sqrt((d+1)/b))²
    (Marchenko-Pastur's edge) rather than 1, 1.7 at a batch of 32 and 3.2 at 5.
    """
    lr, sigma = np.asarray(lr, dtype=float), np.asarray(sigma, dtype=float)
    b = np.minimum(np.asarray(batch_size, dtype=float), np.asarray(num_train, dtype=float))
    eta = np.where(np.asarray(reduction) == "sum", lr * b, lr)
    curvature = np.where(np.asarray(loss) == "huber", 1 / sigma, 2.0)
    return eta * curvature * (1 + np.sqrt((num_inputs + 1) / b)) ** 2 >= 2.0


def as_chunk(runs: Chunk | Sequence[Run]) -> Chunk:
    return runs if isinstance(runs, Chunk) else Chunk.from_runs(list(runs))


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

    _PER_RUN = ("w_hat", "b_hat", "train_loss", "val_mse", "grad_w", "grad_b", "ols_w", "ols_b")

    @classmethod
    def concat(cls, parts: Sequence[ChunkResult]) -> ChunkResult:
        """The results of parts of a chunk, one after the other."""
        first = parts[0]
        return cls(
            **{f: np.concatenate([getattr(p, f) for p in parts]) for f in cls._PER_RUN},
            steps=first.steps,
            w_true=first.w_true,
            b_true=first.b_true,
        )

    def take(self, rows: np.ndarray) -> ChunkResult:
        """The results of the given runs, in that order."""
        return ChunkResult(
            **{f: getattr(self, f)[rows] for f in self._PER_RUN},
            steps=self.steps,
            w_true=self.w_true,
            b_true=self.b_true,
        )


def _check_checkpoints(checkpoints: Sequence[int]) -> None:
    if list(checkpoints) != sorted(set(checkpoints)) or not checkpoints or checkpoints[0] != 0:
        raise ValueError(f"Checkpoints must be sorted, distinct epochs starting at 0; got {list(checkpoints)}.")


def _make_data(run: Run) -> SyntheticRegressionData:
    return SyntheticRegressionData(
        w=list(run.w),
        b=run.b,
        noise=run.noise,
        num_train=run.num_train,
        num_val=run.num_val,
        batch_size=run.batch_size,
        noise_kind=run.noise_kind,
        seed=run.seed,
        stream=run.stream,
    )


def _truth(w: Sequence[float], b: float) -> tuple[np.ndarray, float]:
    return torch.tensor(w).double().numpy(), float(torch.tensor(b, dtype=torch.float32))


def train_reference(runs: Chunk | Sequence[Run], checkpoints: Sequence[int], device: str = "cpu") -> ChunkResult:
    """Train each run with the reference :class:`~study.train.Trainer`, one at a time (CPU)."""
    _check_checkpoints(checkpoints)
    chunk = as_chunk(runs)
    max_epoch = max(checkpoints)
    datas, histories = [], []
    for run in chunk.runs():
        data = _make_data(run)
        model = LinearRegression(
            run.lr,
            loss=run.loss,
            sigma=run.sigma,
            reduction=run.reduction,
            momentum=run.momentum,
            weight_decay=run.weight_decay,
        )
        trainer = Trainer(max_epoch, lr_decay=run.lr_decay, average_from=run.average_from, drop_last=run.drop_last).fit(
            model, data
        )
        datas.append(data)
        histories.append([trainer.history[c] for c in checkpoints])
    ols_w, ols_b = least_squares(torch.stack([d.X_train for d in datas]), torch.stack([d.y_train for d in datas]))
    w_true, b_true = _truth(chunk.w, chunk.b)

    def stack(attr: str) -> np.ndarray:
        return np.array([[np.asarray(getattr(c, attr), dtype=np.float64) for c in h] for h in histories])

    return ChunkResult(
        w_hat=stack("w_hat"),
        b_hat=stack("b_hat"),
        train_loss=stack("train_loss"),
        val_mse=stack("val_mse"),
        grad_w=stack("grad_w"),
        grad_b=stack("grad_b"),
        steps=np.array([c.steps for c in histories[0]], dtype=np.int64),
        ols_w=ols_w.numpy(),
        ols_b=ols_b.numpy(),
        w_true=w_true,
        b_true=b_true,
    )


class _Streams:
    """The data, starts and per-epoch orders of a chunk's S streams, on its device."""

    def __init__(self, chunk: Chunk, seeds: np.ndarray, device: torch.device, options: Options = DEFAULT) -> None:
        self.chunk, self.device, self.options = chunk, device, options
        d, n_total = len(chunk.w), chunk.num_train + chunk.num_val
        uniq, first = np.unique(chunk.seed, return_index=True)
        rows = first[np.searchsorted(uniq, seeds)].tolist()  # a run of each stream, for its noise settings
        self.seeds = torch.as_tensor(seeds, dtype=torch.int64)
        Z = torch.empty(len(seeds), d + 2, n_total, device=device)
        self.starts = torch.empty(len(seeds), d, device=device)
        if chunk.stream == "torch":
            self.datas = [
                SyntheticRegressionData(
                    w=list(chunk.w),
                    b=chunk.b,
                    noise=float(chunk.noise[r]),
                    num_train=chunk.num_train,
                    num_val=chunk.num_val,
                    batch_size=chunk.batch_size,
                    noise_kind=str(chunk.noise_kind[r]),
                    seed=int(chunk.seed[r]),
                    stream="torch",
                )
                for r in rows
            ]
            for i, data in enumerate(self.datas):
                Z[i] = torch.cat([data.X, torch.ones_like(data.y), data.y], 1).T.to(device)
                self.starts[i] = data.initial_weight()[0].to(device)
        else:
            self.seeds = self.seeds.to(device)
            w = torch.tensor(chunk.w, dtype=torch.float32)
            budget = options.draw_budget(device.type)
            per = max(1, budget // (64 * n_total * (d + 4)))  # int64 words and their temporaries
            # Streams that share noise settings are drawn together, in slices under the draw budget.
            settings: dict[tuple, list[int]] = {}
            for i, r in enumerate(rows):
                settings.setdefault((float(chunk.noise[r]), str(chunk.noise_kind[r])), []).append(i)
            for (noise, kind), members in settings.items():
                for lo in range(0, len(members), per):
                    part = members[lo : lo + per]
                    # Consecutive streams (the usual case: one noise setting) as a slice: Z's rows
                    # copied in place, not scattered by indexing (a tenth of a chunk's set-up).
                    consecutive = part[-1] - part[0] == len(part) - 1
                    idx = slice(part[0], part[-1] + 1) if consecutive else torch.tensor(part, device=device)
                    X, y = draw_counter_data(self.seeds[idx], w, chunk.b, noise, kind, chunk.num_train, chunk.num_val)
                    Z[idx, :d] = X.transpose(1, 2)
                    Z[idx, d + 1] = y
                    del X, y
            Z[:, d] = 1.0
            self.starts = counter_initial_weights(self.seeds, d)
        self.Z = Z  # (S, d+2, n_total): z = (x, 1, y), examples along the last dimension
        self._orders: dict[int, torch.Tensor] = {}
        self.compiled = options.compiled and device.type == "cpu" and kernels.AVAILABLE

    def order(self, epoch: int, last: int) -> torch.Tensor:
        """(S, num_train) int64: every stream's order of the training examples for ``epoch``
        (epochs are asked for in turn, up to ``last``)."""
        if self.chunk.stream == "torch":
            return torch.stack([data.permutation() for data in self.datas]).to(self.device)
        if self.compiled:  # the same integers, by one compiled loop (study.kernels.permutations)
            S, n = len(self.seeds), self.chunk.num_train
            out = np.empty((1, S, n), dtype=np.int64)
            kernels.permutations(self.seeds.numpy(), n, np.array([epoch], dtype=np.int64), out)
            return torch.from_numpy(out[0])
        if epoch not in self._orders:
            # Several epochs' orders in one pass, as many as the order budget holds (words, keys and
            # their sort, int64 each): on a CPU a pass's fixed cost is most of a small chunk's.
            S, n = len(self.seeds), self.chunk.num_train
            per = max(1, self.options.order_budget // (24 * S * n))
            epochs = range(epoch, min(epoch + per, last + 1))
            self._orders = dict(zip(epochs, streams.permutations(self.seeds, n, epochs)))
        return self._orders.pop(epoch)


@torch.no_grad()
def train_batched(
    runs: Chunk | Sequence[Run],
    checkpoints: Sequence[int],
    device: str | torch.device = "cpu",
    options: Options = DEFAULT,
) -> ChunkResult:
    """Train a chunk of runs at once on one device; the numbers are the reference's.

    Parameters
    ----------
    runs : Chunk or sequence of Run
        Runs sharing num_train, batch_size, num_val, w, b and the stream setting.
    checkpoints : sequence of int
        Epochs to record, sorted and starting with 0 (the start). Training goes to the largest.
    device : str or torch.device, default="cpu"
    options : study.options.Options, default: its defaults
        Budgets, CUDA graphs and the residuals' arithmetic past ``chain_features`` features.

    Notes
    -----
    Each example is stored as z = (x, 1, y) and each run's parameters as θ = (w, b, −1), so
    that r = z·θ = xw + b − y, and one more product gives the update of (w, b). The derivative
    of the loss is c·clamp(r, lo, hi): c = 2, lo/hi = ∓inf for squared; c = 1/σ, lo/hi = ∓σ
    for Huber (3.5.1). Each step is then a handful of kernels, whatever mix of losses the chunk
    holds.
    """
    return train_batched_together([as_chunk(runs)], checkpoints, device, options)[0]


@torch.no_grad()
def train_batched_together(
    chunks: Sequence[Chunk], checkpoints: Sequence[int], device: str | torch.device = "cpu", options: Options = DEFAULT
) -> list[ChunkResult]:
    """Train several chunks of one batch_size and number of features in one step loop; each
    chunk's result is the one :func:`train_batched` gives it alone, to the bit.

    Chunks of different ``num_train`` take different numbers of steps an epoch. Laid out side
    by side, those that take the most steps first, the runs still in their epoch at any step
    are a prefix of the streams: the loop runs as many steps an epoch as the longest chunk
    takes, each over that prefix. On a CPU, where a step over a few dozen streams costs its
    dispatches rather than its arithmetic, small chunks then share their dispatches.
    """
    _check_checkpoints(checkpoints)
    device = torch.device(device)
    if not chunks:
        return []
    if len({(c.batch_size, len(c.w)) for c in chunks}) > 1:
        raise ValueError("chunks trained together must share batch_size and the number of features")
    if len(chunks) > 1 and not all(c.plain for c in chunks):
        # The optimiser's axes step by the global step count, which chunks of different sizes
        # do not share: each is trained alone (its numbers are the same either way).
        return [train_batched_together([c], checkpoints, device, options)[0] for c in chunks]
    made = [_Part(chunk, device, options) for chunk in chunks]
    if options.compiled and device.type == "cpu" and all(c.plain for c in chunks):
        if kernels.AVAILABLE:
            return _train_compiled(made, checkpoints, options)
        kernels.say_unavailable()
    parts = sorted(made, key=lambda p: -p.T)  # stable: ties keep their order
    bs, d = parts[0].bs, parts[0].d
    m = max(p.m for p in parts)  # a chunk with fewer runs a stream is padded with idle slots
    offsets = np.cumsum([0] + [p.S for p in parts])
    S = int(offsets[-1])

    def side_by_side(values: Sequence[torch.Tensor], pad: float) -> torch.Tensor:  # (..., m_p, S_p) -> (..., m, S)
        if len(values) == 1 and values[0].shape[-2] == m:
            return values[0]
        return torch.cat([torch.nn.functional.pad(v, (0, 0, 0, m - v.shape[-2]), value=pad) for v in values], -1)

    # The steps run on the runs-last layout: θ as (d+2, m, S), a step's examples as
    # (bs, d+2, 1, S), its residuals as (bs, m, S). Every operation is then elementwise over
    # contiguous runs (vectorised whatever the chunk's size: 2-3x faster than (S, m, d+2) from a
    # few hundred runs on), and the sums over the d+2 coordinates and over the minibatch are
    # written out as elementwise operations in a fixed order (a chain of fused multiply-adds;
    # halving the minibatch, a pairwise tree), never a reduction kernel, whose order depends on
    # the tensor's shape and so on how many runs share the chunk.
    th = side_by_side([p.theta.permute(2, 1, 0) for p in parts], 0.0).contiguous()  # (d+2, m, S)
    lo = side_by_side([p.lo[..., 0].T for p in parts], -math.inf).contiguous()  # (m, S)
    hi = side_by_side([p.hi[..., 0].T for p in parts], math.inf).contiguous()
    any_huber = any(p.any_huber for p in parts)
    # Steps [t0, t1) of an epoch run over the first k chunks' streams (a prefix of S_k streams).
    spans, t0 = [], 0
    for k in range(len(parts), 0, -1):
        if parts[k - 1].T > t0:
            spans.append((t0, parts[k - 1].T, k, int(offsets[k])))
            t0 = parts[k - 1].T
    steps_t = [side_by_side([p.steps_t[t] for p in parts[:k]], 0.0) for t0, t1, k, _ in spans for t in range(t0, t1)]
    r_all = torch.empty(bs, m, S, device=device)
    # The minibatch first, so that each half the tree adds is contiguous (on a GPU a kernel
    # writing through a strided view is the slower one).
    prod_all = torch.empty(bs, d + 1, m, S, device=device)
    # Past options.chain_features features, a residual's d products are summed by a pairwise tree
    # over the features (a handful of kernels), not a chain of d fused multiply-adds (d kernels).
    wide = d > options.chain_features
    xw_all = torch.empty(bs, d, m, S, device=device) if wide else None
    loops = []  # per span: the views its steps work on
    for t0, t1, k, Sk in spans:
        r, prod, th_k = r_all[..., :Sk], prod_all[..., :Sk], th[..., :Sk]
        halves = [(prod[:h], prod[s - h : s]) for h, s in tree_levels(bs)]  # the tree: prod[:h] += prod[s-h:s]
        # `is not None`, the same test as `wide` (xw_all is made exactly when wide), narrows for mypy
        xw = xw_all[..., :Sk] if xw_all is not None else None
        features = [(xw[:, :h], xw[:, s - h : s]) for h, s in tree_levels(d)] if xw is not None else None
        # prod[0], once the tree is summed: (d+1, m, S), Σ over the minibatch of z·r.
        loops.append(
            _Span(
                t0=t0,
                t1=t1,
                k=k,
                Sk=Sk,
                r=r,
                r4=r[:, None],
                prod=prod,
                halves=halves,
                update=prod[0],
                th_j=th_k.unbind(0),
                th_b=th_k[d],
                th_wb=th_k[: d + 1],
                th_w=th_k[:d],
                lo=lo[:, :Sk],
                hi=hi[:, :Sk],
                xw=xw,
                features=features,
            )
        )

    general = not parts[0].chunk.plain  # then it is the only part (see above)
    if general:
        q = parts[0]
        wb = th[: d + 1]
        direction = torch.empty_like(wb)
        buf = torch.zeros_like(wb) if q.any_momentum else None
        avg = torch.zeros_like(wb) if q.any_average else None
        denom = torch.full_like(q.neg_lr_s, math.inf)  # per slot: iterates averaged + 1, inf while not averaging

    def span_steps(Zp: torch.Tensor, span: _Span, epoch: int = 0) -> None:
        """A span's steps of one epoch, on its data Zp (t1 - t0, bs, d+2, 1, Sk), y negated.

        Plain SGD folds the step size into the update. With the optimiser's axes (``general``)
        a step is torch.optim.SGD's: the minibatch gradient g, g_w += λw, buf = β·buf + g (buf =
        g at the first step, from buf = 0), θ −= lr_t·buf with lr_t = lr·(1 + t)^−p after t
        steps; then the running average of the iterates, AveragedModel's, where a run averages."""
        t0, t1, r, r4, prod, halves, update = span.t0, span.t1, span.r, span.r4, span.prod, span.halves, span.update
        th_j, th_b, th_wb, th_w, lo_k, hi_k = span.th_j, span.th_b, span.th_wb, span.th_w, span.lo, span.hi
        xw, features = span.xw, span.features
        if general and avg is not None:
            denom.masked_fill_(q.average_from_s == epoch - 1, 1.0)  # averaging starts after epoch k
            active = torch.isfinite(denom).to(denom.dtype)
        # Views made once a span (unbind), buffers once a call, and a step's arguments zipped
        # beforehand: on a CPU a step of small tensors costs its dispatches, a microsecond
        # each, and its Python. Per step: −y and x_1..x_d (bs, 1, S) each, z without y
        # (bs, d+1, 1, S), and the step size (plain) or the gradient's scale (general).
        xs = (Zp[:, :, :d].unbind(0),) if wide else (Zp[:, :, j].unbind(0) for j in range(d))
        per_step = zip(
            Zp[:, :, d + 1].unbind(0),
            *xs,
            Zp[:, :, : d + 1].unbind(0),
            (q.gscale_t if general else steps_t)[t0:t1],
            steps_t[t0:t1],
        )
        for t, (minus_y, *x, z_u, step_t, plain_t) in enumerate(per_step, start=(epoch - 1) * parts[0].T + t0):
            # The residuals r = x·w + b − y, (bs, m, S): fused multiply-adds from −y, then b;
            # wide, the products x_j w_j summed by the features' tree, then −y, then b.
            if xw is not None and features is not None:  # wide (xw and its tree are made exactly then)
                torch.mul(x[0], th_w, out=xw)  # (bs, d, 1, S) x (d, m, S)
                for low, high in features:
                    low.add_(high)
                torch.add(xw[:, 0], minus_y, out=r)
            else:
                torch.addcmul(minus_y, th_j[0], x[0], out=r)
                for j in range(1, d):
                    r.addcmul_(th_j[j], x[j])
            r.add_(th_b)
            if any_huber:
                torch.clamp(r, lo_k, hi_k, out=r)
            torch.mul(z_u, r4, out=prod)  # (bs, d+1, m, S)
            for low, high in halves:
                low.add_(high)
            if not general or q.plain_steps == "all":
                th_wb.addcmul_(update, plain_t)  # the step size on d+1 sums, not on bs residuals
                if not general:
                    continue
            else:
                torch.mul(update, step_t, out=direction)  # the minibatch's gradient of (w, b)
                if q.any_weight_decay:
                    direction[:d].addcmul_(th_wb[:d], q.weight_decay_s)
                if buf is not None:
                    buf.mul_(q.momentum_s).add_(direction)
                lr_t = q.neg_lr_s * torch.pow(float(1 + t), q.neg_decay_s) if q.any_decay else q.neg_lr_s
                if q.plain_steps == "some":
                    # A run of constant lr, no momentum and no weight decay steps as in a chunk of
                    # plain SGD (its bits must not depend on the chunk it shares).
                    torch.where(
                        q.plain_steps_s,
                        torch.addcmul(th_wb, update, plain_t),
                        torch.addcmul(th_wb, direction if buf is None else buf, lr_t),
                        out=th_wb,
                    )
                else:
                    th_wb.addcmul_(direction if buf is None else buf, lr_t)
            if avg is not None:
                avg.add_(torch.sub(th_wb, avg).div_(denom))
                denom.add_(active)

    def reported(epoch: int) -> torch.Tensor:
        """θ as a checkpoint reports it: the average of the iterates where a run averages."""
        if not general or avg is None:
            return th
        out = th.clone()
        averaging = (q.average_from_s >= 0) & (q.average_from_s < epoch)
        out[: d + 1] = torch.where(averaging, avg, th[: d + 1])
        return out

    for p in parts:
        p.checkpoint(0)
    last = max(checkpoints)
    # A graph pays once it is replayed twice; one chunk alone (chunks are trained together on
    # CPU workers only). Its data go through one buffer, refilled each epoch before the replay.
    # On a GPU, plain SGD's epoch as one Triton kernel (study.gpu_kernels): the same operations,
    # fused, so the same bits; one chunk alone, as a GPU trains them.
    fused = options.compiled and not general and len(parts) == 1 and gpu_kernels.usable(device, d, bs, wide)
    steps_all = torch.stack(steps_t) if fused and steps_t else None  # (T, m, S)
    graphed = (
        options.cuda_graphs and device.type == "cuda" and len(parts) == 1 and last >= 3 and not general and not fused
    )
    graph = static = None
    for epoch in range(1, last + 1):
        if fused:
            Zp = parts[0].epoch_data(epoch, last)  # drawn even with no step (drop_last): the stream moves on
            if steps_all is not None:
                gpu_kernels.plain_epoch(Zp, th, steps_all, lo, hi, any_huber, bs)
        elif graphed and epoch >= 2:
            static = parts[0].epoch_data(epoch, last, out=static)
            # On the chunk's GPU, not the process's current one (a graph is captured on, and
            # replayed on, a stream of the current device).
            with torch.cuda.device(device):
                if graph is None:
                    graph = torch.cuda.CUDAGraph()
                    # Records the kernels, runs none of them. A capture stream of its own, on
                    # this device; thread_local: a Dask worker with several threads may train
                    # another chunk beside this one, and only this thread's calls can spoil it.
                    with torch.cuda.graph(graph, stream=torch.cuda.Stream(), capture_error_mode="thread_local"):
                        span_steps(static, loops[0])
                graph.replay()
        else:
            datas = [p.epoch_data(epoch, last) for p in parts]  # (T_p, bs, d+2, 1, S_p) each, y negated
            for span in loops:
                t0, t1, k, Sk = span.t0, span.t1, span.k, span.Sk
                if len(parts) == 1:
                    Zp = datas[0]
                else:  # the span's steps of its k chunks, side by side
                    Zp = torch.empty(t1 - t0, bs, d + 2, 1, Sk, device=device)
                    for data, a, b in zip(datas[:k], offsets[:k], offsets[1 : k + 1]):
                        Zp[..., a:b].copy_(data[t0:t1])
                span_steps(Zp, span, epoch)
                del Zp
            del datas
        if epoch in checkpoints:
            shown = reported(epoch)
            for p, a, b in zip(parts, offsets[:-1], offsets[1:]):
                p.theta.copy_(shown[:, : p.m, a:b].permute(2, 1, 0))
                p.checkpoint(epoch * p.T)
    return [p.result() for p in made]


def _train_compiled(parts: Sequence[_Part], checkpoints: Sequence[int], options: Options) -> list[ChunkResult]:
    """Plain SGD on a CPU, each chunk's epoch one compiled loop (study.kernels.plain_epoch): the
    tensor path's arithmetic in its order, so its bits. Chunks need not share a step loop here
    (there is no dispatch to share): each runs alone, as its own runs would anyway."""
    last = max(checkpoints)
    results = []
    for p in parts:
        d = p.d
        levels, feature_levels = kernels.tree_array(tree_levels(p.bs)), kernels.tree_array(tree_levels(d))
        # The step sizes of a full minibatch and of the epoch's last (which may be short), as
        # (S, 2, m): a stream's runs read theirs from one cache line.
        ends = [p.steps_t[0], p.steps_t[-1]] if p.T else [torch.zeros(p.m, p.S)] * 2
        steps = np.ascontiguousarray(torch.stack(ends).numpy().transpose(2, 0, 1))
        theta, Zpad = p.theta.numpy(), p.Zpad.numpy()
        lo, hi = p.lo[..., 0].numpy(), p.hi[..., 0].numpy()
        wide = d > options.chain_features
        p.checkpoint(0)
        args = (p.T, p.bs, theta, steps, lo, hi, p.any_huber, levels, feature_levels, wide)
        marks = checkpoints[1:]
        if p.chunk.stream == "counter":  # every epoch in one call, orders drawn there, θ kept at each mark
            kept = np.empty((len(marks), *theta.shape), dtype=np.float32)
            if len(marks):
                kernels.plain_epochs(Zpad, p.data.seeds.numpy(), np.asarray(marks, dtype=np.int64), *args, kept)
            for epoch, theta_at in zip(marks, kept):
                theta[:] = theta_at  # p.theta's memory
                p.checkpoint(epoch * p.T)
        else:  # each epoch's order from the runs' generators, in Python
            done = 0
            for epoch in marks:
                for e in range(done + 1, epoch + 1):
                    kernels.plain_epoch(Zpad, p.data.order(e, last).numpy(), *args)
                done = epoch
                p.checkpoint(epoch * p.T)
        results.append(p.result())
    return results


class _Span(NamedTuple):
    """One span of an epoch's steps (steps [t0, t1) over the first k chunks' Sk streams), and the
    views its steps work on: made once a training, so that a step spends nothing on them."""

    t0: int
    t1: int
    k: int
    Sk: int
    r: torch.Tensor  # the residuals (bs, m, Sk)
    r4: torch.Tensor  # r as (bs, 1, m, Sk)
    prod: torch.Tensor  # z·r (bs, d+1, m, Sk), summed over the minibatch in place by `halves`
    halves: list  # the minibatch's pairwise tree: prod[:h] += prod[s-h:s]
    update: torch.Tensor  # prod[0] once summed: Σ z·r (d+1, m, Sk)
    th_j: tuple  # θ's coordinates, one (m, Sk) view each
    th_b: torch.Tensor
    th_wb: torch.Tensor  # (d+1, m, Sk)
    th_w: torch.Tensor  # (d, m, Sk)
    lo: torch.Tensor  # Huber's clamp, per slot (m, Sk)
    hi: torch.Tensor
    xw: torch.Tensor | None  # wide runs only: the products x_j w_j (bs, d, m, Sk)
    features: list | None  # and their pairwise tree over the features


class _Part:
    """One chunk in a batched training: its slots, data, settings, start, and checkpoints."""

    def __init__(self, chunk: Chunk, device: torch.device, options: Options = DEFAULT) -> None:
        self.chunk, self.options = chunk, options
        n, bs, d = chunk.num_train, chunk.batch_size, len(chunk.w)
        self.n, self.bs, self.d = n, bs, d
        K = len(chunk)

        # Slots: run k is slot (stream_of[k], rank of k among its stream's runs); padding slots
        # idle. Within a stream the squared runs come first, so that the Huber runs (whose
        # checkpoints need every example, see below) are the slots from h0 on. A slot's place
        # changes none of its numbers.
        seeds, stream_of = chunk.streams()
        S = len(seeds)
        huber_np = chunk.loss == "huber"
        order = np.lexsort((huber_np, stream_of))
        counts = np.bincount(stream_of, minlength=S)
        m = int(counts.max())
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(K, dtype=np.int64)
        rank[order] = np.arange(K) - first[stream_of[order]]
        self.S, self.m, self.stream_of = S, m, stream_of
        self.slot = torch.as_tensor(stream_of * m + rank, device=device)

        def per_slot(values: np.ndarray, pad: float) -> torch.Tensor:  # (S, m, 1)
            out = torch.full((S * m,), pad, dtype=torch.float32, device=device)
            out[self.slot] = torch.as_tensor(np.asarray(values, dtype=np.float32), device=device)
            return out.view(S, m, 1)

        self.data = data = _Streams(chunk, seeds, device, options)
        Z = data.Z
        huber = per_slot(huber_np, 0.0).bool()
        sigma = per_slot(chunk.sigma, 1.0)
        coef = torch.where(huber, 1 / sigma, torch.full_like(sigma, 2.0))  # dl/dr = coef * clamp(r, lo, hi)
        self.hi = torch.where(huber, sigma, torch.full_like(sigma, math.inf))
        self.lo = -self.hi
        lr = per_slot(chunk.lr, 0.0)  # padding slots take no steps
        is_mean = per_slot(chunk.reduction == "mean", 1.0).bool()
        self.any_huber = bool(huber_np.any())

        self.theta = torch.zeros(S, m, d + 2, device=device)  # (S, m, d+2) = (w, b, -1)
        self.theta[:, :, :d] = data.starts[:, None, :]
        self.theta[:, :, d + 1] = -1.0
        self.record = _Recorder()

        # Each stream's second moments of z = (x, 1, y), in float64: r = θ·z, so the mean r² over
        # a set of examples is θᵀ G θ / count with G = Σ z zᵀ, and Σ r z = G θ. A checkpoint then
        # costs (d+2)² a run for the validation MSE, and for a squared run's training loss and
        # gradient, instead of a pass over the examples; float64 because the terms of θᵀGθ are
        # about 10⁴ times their sum (r is noise-sized where z is not), which float32 would not carry.
        # G is symmetric: each product once, all of them summed in one tree (its additions are
        # a few dispatches each, which on a CPU cost more than small sums' arithmetic).
        pairs = [(j, k) for j in range(d + 2) for k in range(j + 1)]
        rows, cols = (torch.tensor(v, device=device) for v in zip(*pairs))

        # On a CPU with Numba (as the chunk's data found), the same products and trees as one
        # compiled loop (study.kernels).
        self.compiled = data.compiled

        def second_moments(first: int, end: int) -> torch.Tensor:  # examples first..end-1 -> (S, d+2, d+2)
            Zs, count = Z[:, :, first:end], end - first
            if self.compiled:
                out = np.empty((S, d + 2, d + 2), dtype=np.float64)
                kernels.second_moments(Z.numpy(), first, end, kernels.tree_array(tree_levels(count)), out)
                return torch.from_numpy(out)
            G = torch.empty(S, d + 2, d + 2, dtype=torch.float64, device=device)
            # Streams in slices under the sum budget, and where one stream's products exceed it (many
            # features), its pairs in slices too: each product and each sum is the same whatever
            # the slices (a sum's tree runs over the examples alone).
            unit = 8 * max(1, count)
            budget = options.sum_budget(device.type)
            per = max(1, budget // (unit * (len(pairs) + d + 2)))
            per_pairs = len(pairs) if per > 1 else max(1, budget // unit - (d + 2))
            for a in range(0, S, per):
                Zd = Zs[a : a + per].double()
                for b in range(0, len(pairs), per_pairs):
                    j, k = rows[b : b + per_pairs], cols[b : b + per_pairs]
                    G[a : a + per, j, k] = G[a : a + per, k, j] = tree_sum_(Zd[:, j] * Zd[:, k])
            return G

        self.G_val, self.G_train = second_moments(n, Z.shape[2]), second_moments(0, n)
        # Both at once at a checkpoint: the validation MSE and a squared run's training loss.
        self.G_both = torch.stack([self.G_val, self.G_train], 1).flatten(-2)  # (S, 2, (d+2)²)
        # A Huber run's loss and gradient need every training example: from the clamped residual
        # q = clamp(r, -σ, σ), the loss is q (2r − q) / 2σ (r²/2σ inside, |r| − σ/2 outside, eq.
        # 3.5.1) and the gradient Σ q z / σn. Only the slots from h0 on hold Huber runs.
        self.h0 = h0 = int(rank[huber_np].min()) if huber_np.any() else m
        hs = slice(h0, m)
        self.huber_h, self.lo_h, self.hi_h = huber[:, hs, 0], self.lo[:, hs], self.hi[:, hs]
        self.loss_scale_h = -1 / (2 * sigma[:, hs, 0])  # the sign: q (q − 2r)
        self.grad_scale_h = coef[:, hs] / n

        # Minibatches are bs wide; the ragged last one is padded with z = 0, which adds exactly 0
        # to every sum, or with drop_last left out (the epoch's order cut to T·bs examples). Step
        # sizes: −lr/m for `mean` (m the minibatch's true size), −lr for `sum`.
        self.T = T = chunk.steps_per_epoch
        self.drop_last = chunk.drop_last
        sizes = [min(bs, n - t * bs) for t in range(T)]
        step = {size: (-coef * torch.where(is_mean, lr / size, lr))[..., 0].T.contiguous() for size in set(sizes)}
        self.steps_t = [step[size] for size in sizes]  # (m, S) each
        if not chunk.plain:
            # The optimiser's axes, per slot, runs-last (m, S) as the steps take them: the
            # gradient's scale per minibatch size (dl/dr's c, over the size for `mean`), −lr,
            # −p, β, λ, and the epoch averaging starts after (−1: none).
            def runs_last(values: np.ndarray, pad: float) -> torch.Tensor:
                return per_slot(values, pad)[..., 0].T.contiguous()

            # Chunk.__post_init__ fills every optimiser axis given as None
            assert chunk.lr_decay is not None and chunk.momentum is not None and chunk.weight_decay is not None
            assert chunk.average_from is not None
            scale = {size: (coef * torch.where(is_mean, 1.0 / size, 1.0))[..., 0].T.contiguous() for size in set(sizes)}
            self.gscale_t = [scale[size] for size in sizes]
            self.neg_lr_s = -lr[..., 0].T.contiguous()
            self.neg_decay_s = runs_last(-chunk.lr_decay, 0.0)
            self.momentum_s = runs_last(chunk.momentum, 0.0)
            self.weight_decay_s = runs_last(chunk.weight_decay, 0.0)
            self.average_from_s = runs_last(chunk.average_from, -1.0)
            self.any_decay = bool(chunk.lr_decay.any())
            self.any_momentum = bool(chunk.momentum.any())
            self.any_weight_decay = bool(chunk.weight_decay.any())
            self.any_average = bool((chunk.average_from >= 0).any())
            # The runs whose steps are plain SGD's (constant lr, no momentum, no weight decay:
            # averaging aside), which take plain SGD's arithmetic: "all", "some" or "none" of them.
            plain_np = (chunk.lr_decay == 0) & (chunk.momentum == 0) & (chunk.weight_decay == 0)
            self.plain_steps = "all" if plain_np.all() else "some" if plain_np.any() else "none"
            self.plain_steps_s = runs_last(plain_np, 1.0).bool()
        self.Zpad = torch.cat([Z[:, :, :n], torch.zeros_like(Z[:, :, :1])], 2)  # (S, d+2, n + 1)
        self.pad = torch.full((S, max(0, T * bs - n)), n, device=device)

    def epoch_data(self, epoch: int, last: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """(T, bs, d+2, 1, S): the epoch's minibatches, a step's block contiguous, its runs
        last, y negated (the residual's chain starts from −y); written into ``out`` if given."""
        S, d, T, bs = self.S, self.d, self.T, self.bs
        order = self.data.order(epoch, last)
        idx = order[:, : T * bs] if self.drop_last else torch.cat([order, self.pad], 1)  # (S, T*bs)
        Zp = torch.gather(self.Zpad, 2, idx[:, None, :].expand(-1, d + 2, -1))  # (S, d+2, T*bs)
        Zp = Zp.view(S, d + 2, T, bs).permute(2, 3, 1, 0)
        if out is None:
            out = torch.empty(T, bs, d + 2, 1, S, device=Zp.device)
        out[:, :, :, 0].copy_(Zp)
        out[:, :, d + 1].neg_()
        return out

    def checkpoint(self, steps: int) -> None:
        """Record the runs' parameters (self.theta), training loss, validation MSE and gradient."""
        theta, n, d, m, h0 = self.theta, self.n, self.d, self.m, self.h0
        Z = self.data.Z

        # The mean r² is θᵀ G θ / count: (S, m, 2), validation then training.
        if self.compiled:  # the same products and trees by one compiled loop
            sums = torch.empty(self.S, m, 2, dtype=torch.float64)
            grad = torch.empty(self.S, m, d + 1, dtype=torch.float64)
            trees = (kernels.tree_array(tree_levels((d + 2) ** 2)), kernels.tree_array(tree_levels(d + 2)))
            kernels.squared_sums(
                theta.contiguous().numpy(),
                self.G_both.numpy(),
                self.G_train.numpy(),
                *trees,
                sums.numpy(),
                grad.numpy(),
            )
        else:
            t64 = theta.double()
            outer = (t64[:, :, :, None] * t64[:, :, None, :]).flatten(-2)  # (S, m, (d+2)²)
            sums = tree_sum_(outer[:, :, None, :] * self.G_both[:, None])
            grad = tree_sum_(self.G_train[:, None, : d + 1, :] * t64[:, :, None, :])  # (S, m, d+1)
        val_mse = sums[..., 0] / (Z.shape[2] - n)
        train_loss = sums[..., 1] / n  # squared: the mean of r²
        grad = grad * (2 / n)
        if h0 < m:
            hs, mh = slice(h0, m), m - h0
            if self.compiled:
                # The same sums by one compiled loop (study.kernels.huber_sums), the same bits.
                out = np.empty((self.S, mh, d + 2), dtype=np.float32)
                levels = kernels.tree_array(tree_levels(n))
                lo_h, hi_h = self.lo_h[..., 0].contiguous().numpy(), self.hi_h[..., 0].contiguous().numpy()
                kernels.huber_sums(theta.contiguous().numpy(), h0, Z.numpy(), n, lo_h, hi_h, levels, out)
                sums_h = torch.from_numpy(out)
                loss_h, grad_h = sums_h[..., 0], sums_h[..., 1:]
            else:
                # Per stream: r, q, q − 2r and d + 2 products, (m − h0) x n float32 each; streams
                # in slices under the sum budget. addcmul_ is a fused multiply-add on every element
                # alike (checked: its result does not depend on an element's position), so a run's
                # r does not depend on its chunk.
                Zt, S = Z[:, :, :n], self.S
                loss_h = torch.empty(S, mh, device=theta.device)
                grad_h = torch.empty(S, mh, d + 1, device=theta.device)
                per = max(1, self.options.sum_budget(theta.device.type) // (4 * (d + 5) * mh * n))
                for a in range(0, S, per):
                    th, Zs = theta[a : a + per, hs], Zt[a : a + per]
                    r = th[:, :, :1] * Zs[:, None, 0, :]  # (s, m - h0, n)
                    for j in range(1, d + 2):
                        r.addcmul_(th[:, :, j : j + 1], Zs[:, None, j, :])
                    q = torch.clamp(r, self.lo_h[a : a + per], self.hi_h[a : a + per])
                    # The loss's terms q (q − 2r) and the gradient's q z, summed in one tree.
                    terms = torch.empty(*q.shape[:2], d + 2, n, device=q.device)  # (s, m - h0, d+2, n)
                    torch.mul(q, torch.add(q, r, alpha=-2), out=terms[:, :, 0])
                    for j in range(d + 1):
                        torch.mul(q, Zs[:, None, j, :], out=terms[:, :, 1 + j])
                    sums = tree_sum_(terms)
                    loss_h[a : a + per], grad_h[a : a + per] = sums[..., 0], sums[..., 1:]
                    del r, q, terms, sums
            loss_h = loss_h / n * self.loss_scale_h
            grad_h = grad_h * self.grad_scale_h
            # Slots past h0 that are not Huber runs (a stream with another mix, padding) keep
            # the second moments' numbers: a run's numbers never depend on its neighbours.
            train_loss[:, hs] = torch.where(self.huber_h, loss_h.double(), train_loss[:, hs])
            grad[:, hs] = torch.where(self.huber_h[..., None], grad_h.double(), grad[:, hs])
        self.record.add(theta[:, :, :d], theta[:, :, d], train_loss, val_mse, grad[..., :d], grad[..., d], steps)

    def result(self) -> ChunkResult:
        d, G = self.d, self.G_train
        ols_w, ols_b = least_squares_from_moments(G[:, : d + 1, : d + 1], G[:, : d + 1, d + 1])
        w_true, b_true = _truth(self.chunk.w, self.chunk.b)
        return self.record.result(self.slot.cpu().numpy(), self.stream_of, ols_w.numpy(), ols_b.numpy(), w_true, b_true)


class _Recorder:
    """Collects checkpoints on the device and copies them to the host once, at the end."""

    def __init__(self) -> None:
        self.parts: list[tuple[torch.Tensor, ...]] = []
        self.steps: list[int] = []

    def add(self, W, B, train_loss, val_mse, grad_w, grad_b, steps: int) -> None:
        self.parts.append(tuple(t.clone() for t in (W, B, train_loss, val_mse, grad_w, grad_b)))
        self.steps.append(steps)

    def result(self, slot: np.ndarray, stream_of: np.ndarray, ols_w, ols_b, w_true, b_true) -> ChunkResult:
        """Slots (S, m, ...) back to runs (K, C, ...), in the chunk's order."""
        slot_t = torch.as_tensor(slot, device=self.parts[0][0].device)
        cols = []
        for c in zip(*self.parts):
            stacked = torch.stack(c, dim=2)  # (S, m, C, ...)
            cols.append(stacked.flatten(0, 1).index_select(0, slot_t).cpu().double().numpy())
        return ChunkResult(
            w_hat=cols[0],
            b_hat=cols[1],
            train_loss=cols[2],
            val_mse=cols[3],
            grad_w=cols[4],
            grad_b=cols[5],
            steps=np.array(self.steps, dtype=np.int64),
            ols_w=ols_w[stream_of],
            ols_b=ols_b[stream_of],
            w_true=w_true,
            b_true=b_true,
        )
