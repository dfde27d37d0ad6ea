"""The steps of an epoch as one compiled loop (Numba), on a CPU.

The batched engine's step is a dozen tensor operations over a chunk's runs; on a CPU each costs
a microsecond or two of dispatch whatever its size, which is most of a small chunk's time. Here
the same arithmetic runs as one compiled loop per epoch: for each stream, each step, each run
of the stream, the minibatch's residuals, their products and the update, in the very order of
the tensor path, with the fused multiply-adds where it has them (``torch.addcmul`` is one on
the CPU: checked bit for bit in tests/test_kernels.py). A run's numbers are the tensor path's,
bit for bit, so neither the engine's revision nor any stored run changes.

Compiled once per machine (``cache=True``: Numba keeps the machine code beside this file, or in
``NUMBA_CACHE_DIR``), on first use, never on import: ``study --help`` does not pay for it. Where
Numba is not installed or cannot compile here, :data:`AVAILABLE` is False and the engine keeps
its tensor path, saying so once.
"""

# mypy: disable-error-code="call-arg,misc"
# (mypy reads a Numba intrinsic's typing signature as its call signature, and the fallbacks below
# as redefinitions of the compiled functions; the compiled code itself is typed by Numba.)
from __future__ import annotations

import warnings

import numpy as np

__all__: list[str] = []  # private: see study/__init__.py

try:
    import numba
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    AVAILABLE = True
except ImportError:  # an unsupported platform, or installed without it: the tensor path serves
    AVAILABLE = False
_said = False


def say_unavailable() -> None:
    """One line, once a process, where the compiled loop cannot serve."""
    global _said
    if not _said:
        _said = True
        warnings.warn(
            "Numba is not available here: the batched engine takes its tensor path on the CPU (the same numbers, slower)",
            RuntimeWarning,
            stacklevel=3,
        )


if AVAILABLE:

    @intrinsic
    def _fma(typingctx, a, b, c):
        """a·b + c rounded once (LLVM's fma), as torch.addcmul computes it on a CPU."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
            return builder.call(fn, args)

        return sig, codegen

    _U32 = np.uint64(0xFFFFFFFF)
    _M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    _W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
    _PERMUTATION = np.uint64(6)  # study.streams.PURPOSES["permutation"]

    @numba.njit(cache=True, nogil=True)
    def _philox(c0, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
        """Philox4x32-10 on one block (study.streams.philox4x32), words in uint64 < 2**32."""
        for r in range(10):
            if r:
                k0 = (k0 + _W0) & _U32
                k1 = (k1 + _W1) & _U32
            p0 = c0 * _M0
            p1 = c2 * _M1
            c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _U32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _U32)
        return c0, c1, c2, c3

    @numba.njit(cache=True, nogil=True)
    def _permute(seed, epoch, n, words, bucket, start, row):  # pragma: no cover - compiled
        """row[:n] = the seed's permutation of range(n) for ``epoch`` (study.streams.permutations):
        the order of its n Philox words, ties broken by the index. A counting sort on the words'
        top bits (n buckets, one word each on average, filled in index order), then an insertion
        sort within each bucket on (word, index): linear time."""
        useed, un = np.uint64(seed), np.uint64(n)
        k0, k1 = useed & _U32, useed >> np.uint64(32)
        for block in range((n + 3) // 4):
            b = np.uint64(block)
            lanes = _philox(b & _U32, b >> np.uint64(32), np.uint64(epoch), _PERMUTATION, k0, k1)
            for lane in range(4):
                j = 4 * block + lane
                if j < n:
                    words[j] = lanes[lane]
        start[: n + 1] = 0
        for j in range(n):
            bucket[j] = np.int64((words[j] * un) >> np.uint64(32))  # monotone in the word
            start[bucket[j] + 1] += 1
        for q in range(n):
            start[q + 1] += start[q]
        for j in range(n):  # in index order: a bucket's equal words keep it
            q = bucket[j]
            row[start[q]] = j
            start[q] += 1
        lo = 0
        for q in range(n):  # start[q] is now the end of bucket q
            hi = start[q]
            for a in range(lo + 1, hi):
                item = row[a]
                key = words[item]
                c = a - 1
                while c >= lo and (words[row[c]] > key or (words[row[c]] == key and row[c] > item)):
                    row[c + 1] = row[c]
                    c -= 1
                row[c + 1] = item
            lo = hi

    @numba.njit(cache=True, nogil=True)
    def permutations(seeds, n, epochs, out):  # pragma: no cover - compiled
        """out[e, s] = study.streams.permutations(seeds, n, epochs)[e, s], the same integers."""
        words = np.empty(n, np.uint64)
        bucket = np.empty(n, np.int64)
        start = np.empty(n + 1, np.int64)
        for e in range(epochs.shape[0]):
            for s in range(seeds.shape[0]):
                _permute(seeds[s], epochs[e], n, words, bucket, start, out[e, s])

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def _stream_epoch(
        Zpad, row, s, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide, z, r, prod, xw
    ):  # pragma: no cover - compiled
        """One epoch's steps of stream s's runs (see :func:`plain_epoch`), its order ``row``.

        The minibatch is gathered once a step into a block z (d+2, bs), y negated, and the
        stream's m runs step over it: each run's operations are the tensor path's, in its order,
        over contiguous rows of bs values (which the compiler vectorises)."""
        d, n = Zpad.shape[1] - 2, Zpad.shape[2] - 1
        m = theta.shape[1]
        for t in range(T):
            for i in range(bs):
                e = t * bs + i
                idx = row[e] if e < n else n
                for j in range(d + 1):
                    z[j, i] = Zpad[s, j, idx]
                z[d + 1, i] = -Zpad[s, d + 1, idx]
            for k in range(m):
                if wide:
                    for j in range(d):
                        w_j = theta[s, k, j]
                        for i in range(bs):
                            xw[j, i] = z[j, i] * w_j
                    for lv in range(feature_levels.shape[0]):
                        h, top = feature_levels[lv, 0], feature_levels[lv, 1]
                        for a in range(h):
                            low, high = xw[a], xw[top - h + a]
                            for i in range(bs):
                                low[i] = low[i] + high[i]
                    for i in range(bs):
                        r[i] = xw[0, i] + z[d + 1, i]
                else:
                    w_0 = theta[s, k, 0]
                    for i in range(bs):
                        r[i] = _fma(w_0, z[0, i], z[d + 1, i])
                    for j in range(1, d):
                        w_j = theta[s, k, j]
                        for i in range(bs):
                            r[i] = _fma(w_j, z[j, i], r[i])
                b = theta[s, k, d]
                for i in range(bs):
                    r[i] = r[i] + b
                if clamp:
                    # torch.clamp's: NaN stays NaN (no comparison holds for it)
                    lo_k, hi_k = lo[s, k], hi[s, k]
                    for i in range(bs):
                        if r[i] < lo_k:
                            r[i] = lo_k
                        elif r[i] > hi_k:
                            r[i] = hi_k
                for j in range(d + 1):
                    for i in range(bs):
                        prod[j, i] = z[j, i] * r[i]
                for lv in range(levels.shape[0]):
                    h, top = levels[lv, 0], levels[lv, 1]
                    for j in range(d + 1):
                        # Two views, so that the compiler sees the halves apart (and vectorises)
                        low, high = prod[j, :h], prod[j, top - h : top]
                        for a in range(h):
                            low[a] = low[a] + high[a]
                step = steps[t, k, s]
                for j in range(d + 1):
                    theta[s, k, j] = _fma(prod[j, 0], step, theta[s, k, j])

    @numba.njit(cache=True, nogil=True)
    def _buffers(d, bs):  # pragma: no cover - compiled
        return (
            np.empty((d + 2, bs), np.float32),
            np.empty(bs, np.float32),
            np.empty((d + 1, bs), np.float32),
            np.empty((max(d, 1), bs), np.float32),
        )

    @numba.njit(cache=True, nogil=True)
    def plain_epoch(
        Zpad, order, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide
    ):  # pragma: no cover - compiled
        """One epoch's steps of plain SGD for a chunk's runs, in place on ``theta``.

        Zpad: (S, d+2, n+1) float32, each stream's examples z = (x, 1, y) and a last column of
        zeros (the ragged minibatch's padding); order: (S, n) int64, the epoch's order (its first
        T·bs only, with drop_last); theta: (S, m, d+2) float32, θ = (w, b, −1) per slot; steps:
        (T, m, S) float32, each step's size; lo, hi: (S, m) Huber's clamp, applied where
        ``clamp``; levels and feature_levels: the pairwise trees (h, s) over the minibatch and
        over the features; ``wide``: the residual's products by the features' tree.
        """
        z, r, prod, xw = _buffers(Zpad.shape[1] - 2, bs)
        for s in range(Zpad.shape[0]):
            _stream_epoch(
                Zpad, order[s], s, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide, z, r, prod, xw
            )

    @numba.njit(cache=True, nogil=True)
    def plain_epochs(
        Zpad, seeds, first, last, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide
    ):  # pragma: no cover - compiled
        """Epochs ``first`` to ``last`` of plain SGD on the counter stream, each epoch's order
        drawn here (:func:`permutations`' integers): one call between two checkpoints, so that
        nothing runs in Python from epoch to epoch. The other arguments are plain_epoch's."""
        n = Zpad.shape[2] - 1
        z, r, prod, xw = _buffers(Zpad.shape[1] - 2, bs)
        words = np.empty(n, np.uint64)
        bucket = np.empty(n, np.int64)
        start = np.empty(n + 1, np.int64)
        row = np.empty(n, np.int64)
        for epoch in range(first, last + 1):
            for s in range(Zpad.shape[0]):
                _permute(seeds[s], epoch, n, words, bucket, start, row)
                _stream_epoch(
                    Zpad, row, s, T, bs, theta, steps, lo, hi, clamp, levels, feature_levels, wide, z, r, prod, xw
                )

else:  # pragma: no cover - exercised where Numba is missing

    def plain_epoch(*args, **kwargs):
        raise RuntimeError("Numba is not available")

    def permutations(*args, **kwargs):
        raise RuntimeError("Numba is not available")

    def plain_epochs(*args, **kwargs):
        raise RuntimeError("Numba is not available")


def tree_array(levels: list[tuple[int, int]]) -> np.ndarray:
    """study.sums.tree_levels as the (L, 2) int64 array the loops take."""
    return np.asarray(levels, dtype=np.int64).reshape(-1, 2)
