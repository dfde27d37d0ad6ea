"""Sums whose order of additions is fixed by their length alone.

A reduction kernel (``torch.sum``, ``mean``, a matmul) picks its order of additions by the whole
tensor's shape: on a CPU by whether the summed dimension is the innermost, on CUDA also by how
many sums it takes at once (measured on an H200: a run's checkpoint losses changed in the last
bit with the size of its chunk). A run's numbers must not depend on the runs beside it (DESIGN:
results never depend on the chunking), so the engines and the least-squares fit sum with
:func:`tree_sum_`, elementwise adds in a fixed pairwise order. The batched engine's SGD steps
use the same tree (:func:`tree_levels`) over the minibatch, written out over views made once per
call.
"""

from __future__ import annotations

import torch

__all__: list[str] = []  # private: see study/__init__.py


def tree_sum_(x: torch.Tensor) -> torch.Tensor:
    """The sums over ``x``'s last dimension, as a pairwise tree of elementwise adds; ``x`` is
    overwritten (pass a tensor of your own, such as a fresh product).

    With s the values still to sum, ``x[..., :h] += x[..., s-h:s]`` for h = s // 2 until one is
    left: the order depends on the length alone, never on the other dimensions, the layout or
    the device, and the rounding error grows as log n (adding left to right: as n).

    Returns the sums, shape ``x.shape[:-1]`` (zeros for a length of 0), a view into ``x``.
    """
    if x.shape[-1] == 0:
        return x.new_zeros(x.shape[:-1])
    for h, s in tree_levels(x.shape[-1]):
        x[..., :h] += x[..., s - h : s]
    return x[..., 0]


def tree_levels(size: int) -> list[tuple[int, int]]:
    """The tree's additions for a length, level by level: ``(h, s)`` for ``x[:h] += x[s-h:s]``,
    s the values still to sum. The one definition of the order, for :func:`tree_sum_` and for
    the steps' sum over the minibatch (which adds along another dimension, over views)."""
    levels = []
    while size > 1:
        h = size // 2
        levels.append((h, size))
        size -= h
    return levels
