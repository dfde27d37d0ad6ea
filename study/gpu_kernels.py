"""Plain SGD's epoch as one Triton kernel, on a CUDA GPU.

The tensor path runs an epoch's steps as a dozen kernels a step over the whole chunk (replayed
from a CUDA graph), each writing its (bs, m, S) result to memory for the next to read. Here one
kernel runs all the epoch's steps: each GPU thread block holds ``BLOCK`` runs, and for each step
loads the minibatch, computes the residuals, their products and their sum over the minibatch,
and updates the runs' parameters, with nothing between the steps but the parameters.

The arithmetic is the tensor path's, operation for operation (study.engine, ``span_steps``):
the residual a chain of fused multiply-adds from −y, then + b, Huber's clamp, the products z·r,
their pairwise tree over the minibatch (study.sums.tree_levels) and θ += Σ z·r × step as one fused
multiply-add. Triton's own contraction of a multiply and an add is turned off
(``enable_fp_fusion=False``), so that a product is rounded exactly where the tensor path rounds
it, and the fused ones are written as ``tl.fma``. A run's numbers do not depend on its chunk:
every lane's operations are its own.

Triton ships with PyTorch's CUDA builds; where it is missing, or the device is not a CUDA GPU,
:func:`usable` is False and the engine keeps the tensor path. With ``TRITON_INTERPRET=1`` set
before the import the kernel runs on a CPU (slowly), which is how the tests check it without a
GPU.
"""

from __future__ import annotations

import os

import torch

from .sums import tree_levels

__all__: list[str] = []  # private: see study/__init__.py

try:
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # a CPU build of torch, without Triton: the tensor path serves
    AVAILABLE = False

#: Runs a thread block holds: 64 lanes x a minibatch of up to 32 in registers.
BLOCK = 64
#: The widest minibatch the kernel holds in registers (wider ones take the tensor path).
MAX_BATCH = 256
#: The most features the kernel's chain takes (the tensor path's tree past Options.chain_features).
MAX_FEATURES = 16
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def usable(device: torch.device, d: int, bs: int, wide: bool) -> bool:
    """Whether the kernel can run this chunk's epochs on ``device``."""
    if not AVAILABLE or wide or d > MAX_FEATURES or bs > MAX_BATCH:
        return False
    return device.type == "cuda" or (_INTERPRETED and device.type == "cpu")


if AVAILABLE:
    # The sizes are not specialised on (Triton would compile a variant per divisibility of each):
    # one compilation per number of features, minibatch width and loss mix.
    @triton.jit(do_not_specialize=["T", "S", "MS", "bs"])
    def _plain_epoch(
        Zp,  # (T, bs, d+2, 1, S) float32: a step's minibatch, runs last, y negated
        theta,  # (d+2, m, S) float32: θ = (w, b, −1), runs last, updated in place
        steps,  # (T, m, S) float32: each step's size
        lo,  # (m, S) float32: Huber's clamp
        hi,
        T,
        S,
        MS,
        bs,
        D: tl.constexpr,  # the number of features
        BS: tl.constexpr,  # bs rounded up to a power of two (a tile's width)
        LEVELS: tl.constexpr,  # len(tree_levels(bs))
        DP: tl.constexpr,  # d + 1 rounded up to a power of two
        CLAMP: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # pragma: no cover - compiled (or interpreted: tests/test_gpu_kernels.py)
        # A block's lanes: BLOCK consecutive streams' runs of one rank k (slots q = k·S + s), so
        # that a minibatch's loads are contiguous along the lanes.
        # Programs in one dimension (a grid's second is capped at 65,535): rank k's blocks of streams.
        pid = tl.program_id(0).to(tl.int64)
        blocks = (S + BLOCK - 1) // BLOCK
        s = (pid % blocks) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        live = s < S
        q = (pid // blocks) * S + s
        col = tl.arange(0, BS)
        mask = live[:, None] & (col < bs)[None, :]
        width = (D + 2) * S  # an example's stride
        # θ's d+1 coordinates stay in registers from the first step to the last, a (BLOCK, DP)
        # tile; a coordinate is taken out by a sum with −0.0 elsewhere, which is exact for every
        # value (−0.0 included, which +0.0 would turn into +0.0).
        jcol = tl.arange(0, DP)
        th = tl.load(theta + jcol[None, :].to(tl.int64) * MS + q[:, None], mask=live[:, None] & (jcol < D + 1)[None, :])
        if CLAMP:
            lo_q = tl.load(lo + q, mask=live, other=0.0)[:, None]
            hi_q = tl.load(hi + q, mask=live, other=0.0)[:, None]
        for t in range(T):
            # example i of the step, coordinate j, stream s: Zp[((t·bs + i)·(d+2) + j)·S + s]
            here = Zp + (tl.cast(t, tl.int64) * bs + col[None, :]) * width + s[:, None]
            r = tl.load(here + (D + 1) * S, mask=mask, other=0.0)  # −y
            for j in tl.static_range(D):
                th_j = tl.sum(tl.where(jcol[None, :] == j, th, -0.0), axis=1)
                r = tl.fma(th_j[:, None], tl.load(here + j * S, mask=mask, other=0.0), r)
            r = r + tl.sum(tl.where(jcol[None, :] == D, th, -0.0), axis=1)[:, None]
            if CLAMP:
                # torch.clamp's: NaN stays NaN (no comparison holds for it)
                r = tl.where(r < lo_q, lo_q, r)
                r = tl.where(r > hi_q, hi_q, r)
            step = tl.load(steps + tl.cast(t, tl.int64) * MS + q, mask=live, other=0.0)
            new = th
            for j in tl.static_range(D + 1):
                prod = tl.load(here + j * S, mask=mask, other=0.0) * r
                # The pairwise tree over the minibatch: prod[:h] += prod[size-h:size], h = size // 2.
                size = bs
                for _ in tl.static_range(LEVELS):
                    h = size // 2
                    src = tl.where(col < h, col + size - h, col)
                    partner = tl.gather(prod, tl.broadcast_to(src[None, :], (BLOCK, BS)), axis=1)
                    prod = tl.where((col < h)[None, :], prod + partner, prod)
                    size = size - h
                total = tl.sum(tl.where((col == 0)[None, :], prod, -0.0), axis=1)  # prod[:, 0]
                th_j = tl.sum(tl.where(jcol[None, :] == j, th, -0.0), axis=1)
                new = tl.where(jcol[None, :] == j, tl.fma(total, step, th_j)[:, None], new)
            th = new
        tl.store(theta + jcol[None, :].to(tl.int64) * MS + q[:, None], th, mask=live[:, None] & (jcol < D + 1)[None, :])


def plain_epoch(Zp: torch.Tensor, theta: torch.Tensor, steps: torch.Tensor, lo, hi, clamp: bool, bs: int) -> None:
    """One epoch's steps of plain SGD for a chunk's runs, in place on ``theta``.

    Zp: (T, bs, d+2, 1, S), the epoch's minibatches as study.engine's ``epoch_data`` gives them;
    theta: (d+2, m, S); steps: (T, m, S); lo, hi: (m, S), applied where ``clamp``.
    """
    d, m, S = theta.shape[0] - 2, theta.shape[1], theta.shape[2]
    T = Zp.shape[0]
    if T == 0 or m * S == 0:
        return
    grid = (triton.cdiv(S, BLOCK) * m,)
    _plain_epoch[grid](
        Zp,
        theta,
        steps,
        lo,
        hi,
        T,
        S,
        m * S,
        bs,
        D=d,
        BS=triton.next_power_of_2(bs),
        LEVELS=len(tree_levels(bs)),
        DP=triton.next_power_of_2(d + 1),
        CLAMP=clamp,
        BLOCK=BLOCK,
        enable_fp_fusion=False,
    )
