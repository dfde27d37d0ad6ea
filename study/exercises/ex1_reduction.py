"""Exercise 1: the loss's reduction (mean vs sum over the minibatch), and the learning rate that
makes them the same step."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..analysis import open_table
from ..plots import (
    error_curve,
    feature_count,
    merged_legend,
)
from ..summaries import summarize
from .common import (
    Outcome,
    _at,
    _compared,
    _estimate,
    _grid_step,
    _one,
    _precision_text,
    _require,
)


def ex1_reduction(df: Any) -> Outcome:
    t = open_table(df)
    _require(t, "ex1_reduction", reduction=("mean", "sum"))
    epochs = t.values("epoch")
    epoch = 3 if 3 in epochs else int(epochs[-1])
    at = _at(t, epoch=epoch)
    bs = int(_one(at, "batch_size"))
    n = int(_one(at, "num_train"))
    d = feature_count(t)
    table = summarize(at, by=["reduction", "lr"], ci=0.95)
    rows = []
    for reduction, cells in table.groupby("reduction", observed=True):
        stable = cells[cells["diverged"] == 0]
        diverging = cells[cells["diverged"] > cells["count"] / 2]
        best = stable.loc[stable["w_err_norm_median"].idxmin()] if len(stable) else None
        rows.append(
            {
                "reduction": reduction,
                "epoch": epoch,
                "best_lr": best["lr"] if best is not None else np.nan,
                "best_w_err_norm_median": best["w_err_norm_median"] if best is not None else np.nan,
                "largest_stable_lr": stable["lr"].max() if len(stable) else np.nan,
                "smallest_diverging_lr": diverging["lr"].min() if len(diverging) else np.nan,
                "theory_stability_edge": float(theory.sgd_stability_edge(bs, d, str(reduction))),
            }
        )
    best = pd.DataFrame(rows)
    b = best.set_index("reduction")
    # How sharp the best lr is: the lrs whose error, on the same data sets, is not clearly above
    # the best's (the paired ratio's interval reaches 1 or below).
    near = {}
    for reduction, lr in b["best_lr"].items():
        if np.isnan(lr):
            continue
        ratios = _compared(_at(at, reduction=reduction), factor="lr", baseline=lr)
        close = sorted([lr, *(level for level, r in ratios.items() if not r.low > 1)])
        told = all(not np.isnan(r.low) for r in ratios.values())
        near[reduction] = (_estimate(_at(at, reduction=reduction, lr=lr), "w_err_norm"), close, told)

    def best_text(reduction):
        if reduction not in near:
            return "none (every lr diverged)"
        estimate, close, told = near[reduction]
        others = (
            "too few runs to tell which other lrs are clearly worse"
            if not told
            else f"lrs {close[0]:.3g} to {close[-1]:.3g} are not clearly worse on the same data sets"
            if len(close) > 1
            else "every other lr is clearly worse on the same data sets"
        )
        return f"{b.loc[reduction, 'best_lr']:.3g} with `{reduction}` (median ‖ŵ − w‖ {estimate}; {others})"

    ratio = b.loc["mean", "best_lr"] / b.loc["sum", "best_lr"]
    ratio_div = b.loc["mean", "smallest_diverging_lr"] / b.loc["sum", "smallest_diverging_lr"]

    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8), sharey=True)
    error_curve(at, x="lr", y="w_err_norm", hue="reduction", ax=axes[0], legend=False)
    axes[0].set_title(f"after {epoch} epochs (num_train={n}, batch_size={bs})")
    scaled = at.derive(step=f"CASE WHEN reduction = 'sum' THEN lr * {bs} ELSE lr END")
    error_curve(scaled, x="step", y="w_err_norm", hue="reduction", ax=axes[1], legend=False)
    axes[1].set_xlabel(f"lr × {bs} for sum, lr for mean (step per example)")
    axes[1].set_title("rescaled by the batch size")
    # Least squares is one number here (one data set per replicate, whatever the lr): a line.
    ols = _estimate(at, "ols_w_err_norm")
    for ax in axes:
        ax.axhline(ols.value, color="0.45", linewidth=1.2, label=f"least squares on the same data, median ({ols})")
    merged_legend(axes, axes[1], title="reduction")
    fig.suptitle("Exercise 1: the loss summed over the minibatch needs a learning rate batch_size times smaller")
    fig.tight_layout()
    ragged = n % bs
    step = _grid_step(at.values("lr"))
    answer = (
        f"Summing instead of averaging multiplies the gradient of a full minibatch by its size B = {bs}, so the "
        f"learning rate must be divided by B to take the same steps. Measured after {epoch} epochs on {n} "
        f"examples: the best lr was {best_text('mean')}, and {best_text('sum')}: a ratio of {ratio:.3g}; most runs "
        f"diverged from lr {b.loc['mean', 'smallest_diverging_lr']:.3g} "
        f"and {b.loc['sum', 'smallest_diverging_lr']:.3g} (ratio {ratio_div:.3g}); the grid's lrs are "
        f"{step:.2g} times apart, so the ratios are B to within that step. Theory for online SGD on the squared loss "
        f"(`study.theory.sgd_stability_edge`) puts the edge at lr {b.loc['mean', 'theory_stability_edge']:.2g} for "
        f"`mean` and {b.loc['sum', 'theory_stability_edge']:.2g} for `sum`, the same ratio B; the largest lr with no "
        f"diverged run was {b.loc['mean', 'largest_stable_lr']:.3g} and {b.loc['sum', 'largest_stable_lr']:.3g} (a finite "
        f"training set run for {epoch} epochs is not the online limit). Rescaled, the two curves lie on top of each "
        f"other except for the ragged last minibatch: {n} = {n // bs}·{bs} + {ragged}"
        + (
            f", and with `sum` that last step is {ragged}/{bs} as large as with `mean`, which weights its {ragged} "
            f"examples as much as a full batch. So lr_sum = lr_mean / B exactly when B divides num_train, and nearly "
            f"so otherwise. "
            if ragged
            else ", so every minibatch is full and lr_sum = lr_mean / B exactly. "
        )
        + _precision_text(t)
    )
    return Outcome({"ex1_reduction": table, "ex1_best_lr": best}, {"ex1_reduction": fig}, answer)
