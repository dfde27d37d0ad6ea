"""Counter-based random streams: Philox4x32-10, evaluated with tensor operations on any device.

A run's random numbers are a pure function of four things: its seed (the Philox key), what
they are for (a ``purpose``), the epoch (0 for what is drawn once) and their index. Nothing is
sequential, so the numbers of a million runs are drawn at once on the chunk's device, and a
run's numbers do not depend on which other runs share its chunk, worker or device.

The generator is Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as
easy as 1, 2, 3", SC'11), the one behind PyTorch's and JAX's CUDA random numbers. It maps a
128-bit counter and a 64-bit key to 128 random bits; ``tests/test_streams.py`` checks it
against the paper's published known-answer vectors and an independent NumPy implementation.

Layout of the counter for the i-th block of four 32-bit words of a purpose::

    (c0, c1, c2, c3) = (i mod 2**32, i // 2**32, epoch, purpose)     key = (seed mod 2**32, seed // 2**32)

Words are integers, identical on every device. From them:

- ``uniforms``: ((u >> 9) + 0.5) / 2**23 in float32, in [2**-24, 1 - 2**-24] and exactly
  representable (23 bits and a half fit float32's 24), so bit-identical on every device.
- ``normals``: Box-Muller on pairs of uniforms, in float32. The radius is at most
  sqrt(2 ln 2**24) ≈ 5.77: tails beyond 5.77σ (probability 8e-9) are not drawn. The transcendental
  functions round differently on a CPU and a GPU, by an ulp or so.
- ``permutations``: each row is the order of ``n`` counter-drawn 32-bit keys, ties broken by the
  index (the 63-bit sort keys ``word << 31 | index`` are distinct), so any sort gives the same
  permutation, on any device.

Limits: seeds in [0, 2**63), epochs and purposes below 2**32, permutations of fewer than
2**31 elements.

Integers are held in int64 tensors with values below 2**32. The 32 x 32-bit products of Philox
reach 2**64 and wrap in int64; their low 64 bits are what two's-complement multiplication gives
on every device torch supports, which the known-answer tests check on the CPU and on CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__: list[str] = []  # private: see study/__init__.py

#: ``counter``: this module's Philox streams, drawn on the chunk's device for all runs at once.
#: ``torch``: a per-run ``torch.Generator`` on the CPU, drawn in the documented order of
#: :mod:`study.data` (the book's own sequence). (The names live in study.vocabulary.)

#: What the numbers are for: the fourth counter word. Each purpose has its own numbers, so
#: adding one never shifts another.
PURPOSES = {
    "features": 0,  # X, (num_train + num_val) x d normals, row-major
    "noise": 1,  # the label noise, num_train + num_val normals
    "chi2": 2,  # student_t: STUDENT_T_DF normals per example
    "outlier_hit": 3,  # outliers: one uniform per training example
    "outlier_size": 4,  # outliers: one normal per training example
    "init": 5,  # the initial weight, d normals
    "permutation": 6,  # one 32-bit sort key per training example and epoch
}

_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # the multipliers of Philox4x32
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # the key schedule's Weyl increments
_MASK = 0xFFFFFFFF


def philox4x32(
    counter: tuple[torch.Tensor, ...], key: tuple[torch.Tensor, ...], rounds: int = 10
) -> tuple[torch.Tensor, ...]:
    """Philox4x32 with ``rounds`` rounds, elementwise over broadcastable int64 tensors.

    Parameters
    ----------
    counter : 4 int64 tensors, values in [0, 2**32)
    key : 2 int64 tensors, values in [0, 2**32)

    Returns
    -------
    4 int64 tensors of the broadcast shape, values in [0, 2**32)
    """
    shape = torch.broadcast_tensors(*counter, *key)[0].shape  # (broadcast_shapes imports sympy: half a second)
    # Fresh full-size words, then updated in place: a round allocates two tensors, not twelve.
    c0, c1, c2, c3 = (t.expand(shape).clone() for t in counter)
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        c0.mul_(_M0)  # the full 64-bit products, wrapped in int64 (see the module's docstring)
        c2.mul_(_M1)
        # The products' low halves become c1 and c3 unmasked: their upper bits are only ever
        # XORed into a word that is masked next, so one mask a word per round suffices (10
        # operations a round, not 12). The shifts are arithmetic; the mask drops the sign.
        hi0, hi1 = c0 >> 32, c2 >> 32
        c0, c1, c2, c3 = (
            hi1.bitwise_xor_(c1).bitwise_xor_(k0).bitwise_and_(_MASK),
            c2,
            hi0.bitwise_xor_(c3).bitwise_xor_(k1).bitwise_and_(_MASK),
            c0,
        )
    return c0, c1.bitwise_and_(_MASK), c2, c3.bitwise_and_(_MASK)


def seed_keys(seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Philox key (k0, k1) of each seed, shaped (S, 1) to broadcast over a row of blocks."""
    seeds = seeds.to(torch.int64).reshape(-1, 1)
    return seeds & _MASK, (seeds >> 32) & _MASK


#: Philox blocks computed at once: on a CPU a slice whose words stay in its caches (measured
#: twice as fast as one pass over all), on a GPU as many as take a few hundred MB.
_SLICE = {"cpu": 2**16, "cuda": 2**23}


def words(seeds: torch.Tensor, purpose: str, count: int, epoch: int | Sequence[int] = 0) -> torch.Tensor:
    """(S, count) random 32-bit words (int64) of each seed for ``purpose`` and ``epoch``; with a
    sequence of E epochs, (E, S, count), drawn in one pass (a pass costs a hundred operations,
    whatever its size: on a CPU, most of a small chunk's time).

    The j-th word of a row is lane j % 4 of block j // 4: it depends on the seed, the purpose,
    the epoch and j alone, not on ``count`` nor on the other epochs drawn beside it.
    """
    one = isinstance(epoch, (int, np.integer))
    # the test of `one` again: mypy narrows epoch on an isinstance, not on a bool that holds one
    epochs = [int(epoch)] if isinstance(epoch, (int, np.integer)) else [int(e) for e in epoch]
    compiled = _compiled_rows(seeds, purpose, epochs, count, np.int64)
    if compiled is not None:
        return compiled if one else compiled.view(len(epochs), -1, count)
    k0, k1 = seed_keys(seeds)
    device = k0.device
    S, E, B = k0.shape[0], len(epochs), -(-count // 4)
    # Rows are (epoch, seed) pairs, each with its key and epoch word.
    k0, k1 = k0.repeat(E, 1), k1.repeat(E, 1)
    epoch_col = torch.tensor(epochs, device=device).repeat_interleave(S)[:, None]
    R = E * S
    out = torch.empty(R, B, 4, dtype=torch.int64, device=device)
    purpose_word = torch.tensor(PURPOSES[purpose], device=device)
    step = _SLICE.get(device.type, _SLICE["cuda"])
    if B >= step:  # long rows: a slice of blocks of one row at a time
        slices = [(slice(r, r + 1), lo, min(lo + step, B)) for r in range(R) for lo in range(0, B, step)]
    else:  # short rows: whole rows, several at a time
        rows = step // B
        slices = [(slice(r, min(r + rows, R)), 0, B) for r in range(0, R, rows)]
    for r, lo, hi in slices:
        block = torch.arange(lo, hi, device=device)[None, :]
        lanes = philox4x32((block & _MASK, block >> 32, epoch_col[r], purpose_word), (k0[r], k1[r]))
        torch.stack(torch.broadcast_tensors(*lanes), -1, out=out[r, lo:hi])
    out = out.view(R, 4 * B)[:, :count]
    return out if one else out.view(E, S, count)


def _compiled_rows(
    seeds: torch.Tensor, purpose: str, epochs: Sequence[int], count: int, dtype: type
) -> torch.Tensor | None:
    """(E·S, count) of :func:`words` (int64) or :func:`uniforms` (float32), the same integers and
    floats by one compiled loop (study.kernels.philox_rows; a tensor pass costs a hundred
    operations); None off a CPU or without Numba."""
    from . import kernels  # here, not at the top: importing Numba costs a few tenths of a second

    if seeds.device.type != "cpu" or not kernels.AVAILABLE:
        return None
    seeds64 = seeds.to(torch.int64).reshape(-1).numpy()
    full: np.ndarray = np.empty((len(epochs) * len(seeds64), 4 * -(-count // 4)), dtype=dtype)
    kernels.philox_rows(seeds64, PURPOSES[purpose], np.asarray(epochs, dtype=np.int64), full)
    return torch.from_numpy(full)[:, :count]


def _to_uniform(w: torch.Tensor) -> torch.Tensor:
    # 23 random bits and a half: exactly representable in float32, never 0 nor 1.
    return ((w >> 9).to(torch.float32) + 0.5) * (2.0**-23)


def uniforms(seeds: torch.Tensor, purpose: str, count: int, epoch: int = 0) -> torch.Tensor:
    """(S, count) float32 uniforms in (0, 1), bit-identical on every device."""
    rows = _compiled_rows(seeds, purpose, [epoch], count, np.float32)
    return rows if rows is not None else _to_uniform(words(seeds, purpose, count, epoch))


def normals(seeds: torch.Tensor, purpose: str, count: int, epoch: int = 0) -> torch.Tensor:
    """(S, count) float32 standard normals (Box-Muller on the words' uniforms, pairs of lanes)."""
    even = count + (count % 2)
    u = uniforms(seeds, purpose, even, epoch).view(-1, even // 2, 2)
    radius = torch.sqrt(-2.0 * torch.log(u[..., 0]))
    angle = (2.0 * math.pi) * u[..., 1]
    # The products written in place, pairs interleaved (a product is exactly rounded wherever
    # it is written: the same floats as stacking them, without the copy)
    z = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    torch.mul(radius, torch.cos(angle), out=z[..., 0])
    torch.mul(radius, torch.sin(angle), out=z[..., 1])
    return z.view(-1, even)[:, :count]


def permutations(seeds: torch.Tensor, n: int, epoch: int | Sequence[int]) -> torch.Tensor:
    """(S, n) int64: each seed's permutation of range(n) for ``epoch``; (E, S, n) for a sequence
    of E epochs, drawn and sorted at once (see the module's docstring)."""
    keys = words(seeds, "permutation", n, epoch) << 31
    keys |= torch.arange(n, device=keys.device)
    if keys.device.type == "cpu":
        keys = torch.from_numpy(_sort_rows(keys.numpy().reshape(-1, n))).view(keys.shape)
    else:
        keys = torch.sort(keys, dim=-1).values
    return keys & (2**31 - 1)


def _sort_rows(keys: np.ndarray) -> np.ndarray:
    """Each row of distinct 63-bit keys ``word << 31 | index`` sorted, on a CPU: NumPy's sort
    (twice torch's there). From 500 keys a row, first a stable radix pass on the top 16 bits,
    which leaves each row sorted but for ties within its 2**16 buckets, then NumPy's stable
    sort (timsort, near linear on nearly sorted rows): measured 26 -> 14 ns a key at 10,000 and
    17 -> 8 at 2,000 on this project's 2-core machine; the same result, since the keys are
    distinct."""
    rows, n = keys.shape
    if n < 500:
        return np.sort(keys, axis=-1)
    order = np.argsort((keys >> 47).astype(np.uint16), axis=-1, kind="stable")  # the word's top 16 bits
    order += (np.arange(rows) * n)[:, None]
    keys = np.take(keys.reshape(-1), order)  # 30% faster than take_along_axis
    keys.sort(axis=-1, kind="stable")
    return keys
