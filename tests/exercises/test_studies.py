"""The studies' figures drawn from their raw tables (study plot --figure exN_...)."""

from __future__ import annotations

import pandas as pd
import pytest

from study.exercises import exercise_figure
from study.exercises.catalog import EXERCISE_FIGURES, FIGURES


def test_every_study_draws_the_figures_its_catalogue_promises(quick):
    """``study plot --figure NAME`` accepts exactly the figures the studies draw."""
    _, outcomes = quick
    assert {n: tuple(o.figures) for n, o in outcomes.items()} == FIGURES
    assert sorted(EXERCISE_FIGURES) == sorted(name for names in FIGURES.values() for name in names)


def test_an_exercise_figure_is_drawn_from_its_raw_table_as_the_study_draws_it(quick):
    out, outcomes = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex4_lr_epochs.parquet")
    fig = exercise_figure(raw, "ex4_lr_epochs")
    assert fig.axes[0].get_title().startswith("median")
    assert [ax.get_title() for ax in fig.axes] == [ax.get_title() for ax in outcomes[4].figures["ex4_lr_epochs"].axes]
    raw7 = out / "results" / "raw" / "ex7_weight_decay.parquet"  # a path, as study plot gives it
    assert exercise_figure(raw7, "ex7_weight_decay").texts[0].get_text() == (
        outcomes[7].figures["ex7_weight_decay"].texts[0].get_text()
    )


def test_an_exercise_figure_refuses_other_names_and_tables_that_lack_what_it_needs(quick):
    out, _ = quick
    raw = pd.read_parquet(out / "results" / "raw" / "ex4_lr_epochs.parquet")
    with pytest.raises(ValueError, match=r"The 'figure' parameter of exercise_figure must be one of \['ex1_reduction'"):
        exercise_figure(raw, "heatmap")
    with pytest.raises(
        ValueError,
        match=r"The 'figure' parameter of exercise_figure must be a figure the table can draw "
        r"\(ex1_reduction needs reduction = mean, sum; the table has reduction = mean\)",
    ):
        exercise_figure(raw, "ex1_reduction")
