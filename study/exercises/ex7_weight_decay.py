"""Study 7: weight decay (d2l §3.7) when d is large against n: training loss, validation error
and the best λ."""

from __future__ import annotations

import functools
import textwrap
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from ..analysis import Table, literal, open_table
from ..grid import w_vector
from ..plots import (
    PALETTE,
    error_curve,
    merged_legend,
)
from ..summaries import summarize
from .common import (
    Estimate,
    Outcome,
    _at,
    _estimate,
    _interval,
    _one,
    _precision_text,
    _ratio,
    _require,
    _sig,
)


def _true_w_norm(t: Table, d: int) -> float:
    """‖w‖ of the grid's runs of d features, from the table's spec (w, or its one number
    repeated d times); NaN where the table has no spec."""
    return float(np.linalg.norm(w_vector((t.spec or {}).get("w", [np.nan]), d)))


def ex7_weight_decay(df: Any) -> Outcome:
    t = open_table(df)
    _require(t, "ex7_weight_decay", weight_decay=(0.0,))
    table = summarize(t, by=["num_train", "weight_decay", "epoch"], ci=0.95)
    sizes = [int(n) for n in t.values("num_train")]
    decays = [float(v) for v in t.values("weight_decay")]
    last = int(t.values("epoch")[-1])
    d = int(_one(t, "num_inputs"))
    at_last = t.filter(f"epoch = {last}")
    # λ = 0 sits at the left edge of a log axis: drawn at a tenth of the smallest λ > 0, and said.
    positive = [v for v in decays if v > 0]
    zero_at = min(positive) / 10 if positive else 1.0
    shifted = at_last.derive(lam=f"CASE WHEN weight_decay = 0 THEN {literal(zero_at)} ELSE weight_decay END")
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.2))
    small = sizes[0]
    losses = shifted.select({"num_train": [small]})
    long = losses.query(
        f"SELECT lam, 'training loss' AS kind, train_loss AS v FROM {losses.relation} UNION ALL "
        f"SELECT lam, 'validation MSE' AS kind, val_mse AS v FROM {losses.relation}"
    )
    ax = axes[0]
    for kind, colour in zip(("training loss", "validation MSE"), sns.color_palette(PALETTE, 2)):
        rows = long[long["kind"] == kind]
        xs, meds, los, his = [], [], [], []
        for lam, group in rows.groupby("lam", sort=True):
            e = _interval(group["v"].to_numpy())
            xs.append(lam)
            meds.append(e.value)
            los.append(e.low)
            his.append(e.high)
        ax.plot(xs, meds, marker="o", color=colour, label=kind)
        ax.fill_between(xs, los, his, color=colour, alpha=0.25, linewidth=0)
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel(f"weight decay λ (λ = 0 drawn at {zero_at:g})")
    ax.set_ylabel("mean squared error (median over data sets)")
    ax.set_title(f"d2l §3.7's setting: num_train={small}, d={d}, epoch {last}")
    ax.legend(fontsize="small", title="band: the median's 95% interval", title_fontsize="small")
    error_curve(shifted, x="lam", y="w_err_norm", hue="num_train", ax=axes[1], legend=False)
    # Least squares on each data size (the minimum-norm fit where n < d + 1): one grey line each.
    for n in sizes:
        ols = _estimate(_at(at_last, num_train=n), "ols_w_err_norm")
        axes[1].axhline(
            ols.value,
            color="0.5",
            linewidth=1.1,
            zorder=1,
            label="least squares on the same data (minimum norm where n ≤ d)" if n == sizes[0] else None,
        )
        axes[1].annotate(
            f"n = {n:,}",
            (1.0, ols.value),
            xycoords=("axes fraction", "data"),
            xytext=(-3, 2),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.35",
        )
    merged_legend([axes[1]], axes[1], title="num_train")
    # Ridge's closed form (theory.weight_decay_w_err_sq) holds for n >> d; say why it is not drawn.
    ratio = d / max(sizes)
    axes[1].text(
        1.02,
        0.02,
        textwrap.fill(
            f"No theory of weight decay is drawn: ridge's closed form holds for n ≫ d only (here d/n ≥ {ratio:.2g}), "
            "for the average of the iterates, not the last one.",
            48,
        ),
        transform=axes[1].transAxes,
        fontsize=7,
        color="0.3",
        va="bottom",
    )
    axes[1].set_xlabel(f"weight decay λ (λ = 0 drawn at {zero_at:g})")
    axes[1].set_title(f"‖ŵ − w‖₂ against λ, d={d}, epoch {last}")
    fig.suptitle(
        f"Study 7: weight decay λ on the weight, as d2l §3.7 (d = {d} features, ‖w‖ = "
        f"{_sig(_true_w_norm(t, d))}), at num_train = " + ", ".join(f"{n:,}" for n in sizes)
    )
    fig.tight_layout()

    @functools.cache  # the same cells are read for the table of best λ and for the text
    def est(n: int, lam: float, column: str) -> Estimate:
        return _estimate(_at(t, num_train=n, weight_decay=lam, epoch=last), column)

    best = {}
    for n in sizes:
        medians = {lam: est(n, lam, "w_err_norm") for lam in decays}
        best[n] = min(medians, key=lambda lam: medians[lam].value)
    parts = []
    lam_book = 3.0 if 3.0 in decays else positive[len(positive) // 2]
    train0, val0 = est(small, 0.0, "train_loss"), est(small, 0.0, "val_mse")
    train3, val3 = est(small, lam_book, "train_loss"), est(small, lam_book, "val_mse")
    parts.append(
        f"in the book's setting (n = {small}, d = {d}, {last} epochs), without weight decay the training loss is "
        f"{train0} and the validation MSE {val0}: the model fits the {small} examples and not the rest; with "
        f"λ = {lam_book:g} (the book's) they are {train3} and {val3}"
    )
    for n in sizes:
        base, chosen = est(n, 0.0, "w_err_norm"), est(n, best[n], "w_err_norm")
        paired = _ratio(
            _at(t, num_train=n, weight_decay=best[n], epoch=last),
            _at(t, num_train=n, weight_decay=0.0, epoch=last),
            "w_err_norm",
        )
        if best[n] == 0.0:
            parts.append(
                f"at n = {n:,} weight decay stops helping: ‖ŵ − w‖ is smallest without it ({base}), and "
                f"every λ > 0 adds bias (at λ = {decays[-1]:g}: {est(n, decays[-1], 'w_err_norm')})"
            )
        else:
            parts.append(
                f"at n = {n:,} the best λ of the grid, {best[n]:g}, gives ‖ŵ − w‖ = {chosen} against {base} "
                f"without (paired ratio {paired.factor()})"
            )
    parts.append(
        f"no theory is drawn: ridge's closed form (study.theory.weight_decay_w_err_sq) holds for n ≫ d only, "
        f"and d/n is {d / max(sizes):.2g} at the largest n here"
    )
    strongest = ", ".join(f"{est(n, decays[-1], 'w_err_norm')} at n = {n:,}" for n in sizes)
    parts.append(f"at λ = {decays[-1]:g}, ŵ is shrunk to about 0 at every n: ‖ŵ − w‖ is {strongest}, about ‖w‖ itself")
    answer = (
        f"Weight decay shrinks ŵ toward 0 (‖w‖ = {_sig(_true_w_norm(t, d))} here): "
        + "; ".join(parts)
        + ". "
        + _precision_text(t)
    )
    return Outcome({"ex7_weight_decay": table}, {"ex7_weight_decay": fig}, answer)
