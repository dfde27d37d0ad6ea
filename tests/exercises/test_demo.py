"""The section's own example."""

from __future__ import annotations

import numpy as np
import torch


def test_seed_example_gives_the_books_errors_and_least_squares_beside_them():
    from study.exercises import seed_example

    errors = seed_example(epochs=3, seed=0)
    assert errors["w"].abs().max() < 0.05 and abs(float(errors["b"])) < 0.05  # the book's order of magnitude
    assert np.abs(errors["ols_w"]).max() < 2e-3 and abs(errors["ols_b"]) < 2e-3
    again = seed_example(epochs=3, seed=0)
    assert torch.equal(again["w"], errors["w"])
