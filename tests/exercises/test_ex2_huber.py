"""Study 2: what its answer, tables and figures say, read back from its raw table."""

from __future__ import annotations

import pandas as pd
import pytest

from study.exercises.ex2_huber import huber_step_check, step_ratio


def test_ex2_quick_huber_beats_squared_under_outliers(quick):
    out, _ = quick
    table = pd.read_csv(out / "results" / "ex2_huber.csv")
    last = table[
        (table["noise_kind"] == "outliers") & (table["epoch"] == table["epoch"].max()) & (table["num_train"] == 1000)
    ].set_index("loss_sigma")
    assert last.loc["Huber σ=0.1", "w_err_norm_median"] < last.loc["squared", "w_err_norm_median"] / 5


def test_ex2_states_the_effective_step_of_each_loss(quick):
    assert step_ratio(1.0) == 0.5 and step_ratio(0.1) == pytest.approx(5.0) and step_ratio(2.0) == 0.25
    assert step_ratio(1.0, residual=3.0) == pytest.approx(1 / 6)  # outside the zone: clipped at 1, against 2r = 6
    check = huber_step_check()
    assert check["squared_lr"] == 0.5 and check["max_abs_difference"] == 0.0
    out, outcomes = quick
    ex2 = (out / "results" / "answers.md").read_text().split("**Exercise 2.**")[1].split("**Exercise 3.**")[0]
    assert "without the book's ½" in ex2 and "Huber takes half the step of squared" in ex2
    assert "Huber at lr 1 against squared at lr 0.5" in ex2 and "exactly the same ŵ and b̂" in ex2
    notes = [t.get_text() for t in outcomes[2].figures["ex2_huber"].texts]
    assert any("σ=0.1: 0.15, σ=0.5: 0.03, σ=2: 0.0075" in n.replace("\n", " ") for n in notes)
