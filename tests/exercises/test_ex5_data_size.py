"""Study 5: what its answer, tables and figures say, read back from its raw table."""

from __future__ import annotations

import pandas as pd


def test_ex5_quick_least_squares_slope_is_near_minus_a_half(quick):
    out, _ = quick
    slopes = pd.read_csv(out / "results" / "ex5_slopes.csv").set_index("quantity")
    assert -0.7 <= slopes.loc["ols_w_err_norm", "slope"] <= -0.3
    assert (
        slopes.loc["ols_w_err_norm", "low"]
        <= slopes.loc["ols_w_err_norm", "slope"]
        <= slopes.loc["ols_w_err_norm", "high"]
    )


def test_ex5_figure_and_slopes_table_give_one_least_squares_interval(quick):
    """The exercise-5 bug: the legend's interval came from rows pooled over 3 lrs (each data set
    counted 3 times). Both now come from one value per data stream, by one function."""
    out, outcomes = quick
    slopes = pd.read_csv(out / "results" / "ex5_slopes.csv").set_index("quantity")
    ols = slopes.loc["ols_w_err_norm"]
    assert ols["units"] == 6 * 9  # 6 replicates x 9 sizes: data sets, not runs (3 lrs x 2 losses each)
    legend = [t.get_text() for t in outcomes[5].figures["ex5_data_size"].axes[0].get_legend().get_texts()]
    floor = next(text for text in legend if text.startswith("least squares on the same data"))
    assert floor.endswith(f"(slope {ols['slope']:.2f} [{ols['low']:.2f}, {ols['high']:.2f}])")
    answers = (out / "results" / "answers.md").read_text()
    assert f"n^{ols['slope']:.2f} (95% interval [{ols['low']:.2f}, {ols['high']:.2f}])" in answers


def test_quick_answers_say_what_the_quick_grids_hold(quick):
    out, _ = quick
    answers = (out / "results" / "answers.md").read_text()
    ex5 = answers.split("**Exercise 5.**")[1].split("**Study 6.**")[0]
    assert "9 sizes from 5 to 2,000 cover 2.6 decades" in ex5 and "11 sizes" not in ex5 and "10,000" not in ex5
    slopes = pd.read_csv(out / "results" / "ex5_slopes.csv")
    sgd = slopes[slopes["quantity"].str.startswith("w_err_norm (SGD, squared, lr=0.03,")].iloc[0]
    assert sgd["sizes"] >= 3 and sgd["fit_from"] == 500  # 500, 1000, 2000: three sizes, never two
    word = "falls as" if sgd["high"] < 0 else "rises as" if sgd["low"] > 0 else "shows no clear trend"
    assert f"from n = 500 on (3 sizes) it {word}" in ex5
    assert "(only 10 steps" in ex5  # read from the table's steps column: ceil(5 / 32) x 10 epochs
