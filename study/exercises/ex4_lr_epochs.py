"""Exercise 4: the learning rate against the number of epochs."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .. import theory
from ..analysis import open_table
from ..plots import (
    error_curve,
    feature_count,
    lr_epoch_heatmap,
)
from ..summaries import summarize
from .common import (
    Outcome,
    _at,
    _compared,
    _estimate,
    _noise_var,
    _one,
    _paired_columns,
    _precision_text,
    _ragged_text,
    _ratio,
    _sig,
)


def ex4_lr_epochs(df: Any) -> Outcome:
    t = open_table(df)
    table = summarize(t, by=["lr", "epoch"], ci=0.95)
    n = int(_one(t, "num_train"))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.4), gridspec_kw={"width_ratios": [1.0, 1.1]})
    lr_epoch_heatmap(t, ax=axes[0])
    axes[0].set_title("median ‖ŵ − w‖ (grey: most runs diverged)")
    error_curve(
        t.filter("epoch > 0"),
        x="epoch",
        y="w_err_norm",
        hue="lr",
        floor="ols_w_err_norm",
        ax=axes[1],
        legend_title="lr",
        legend="outside",
    )
    axes[1].set_title("error against epoch, with least squares on the same data")
    fig.suptitle(
        f"Exercise 4: more epochs help until a floor set by the data and, for SGD, by the learning rate (num_train={n})"
    )
    fig.tight_layout(w_pad=3.0)  # room between the colour bar's label and the right panel's y label

    last = int(t.values("epoch")[-1])
    final = table[table["epoch"] == last]
    stable = final[final["diverged"] == 0]
    best = stable.loc[stable["w_err_norm_median"].idxmin()]
    diverging = sorted(final[final["diverged"] > final["count"] / 2]["lr"])
    lrs = t.values("lr")
    floor = _estimate(_at(t, epoch=last), "ols_w_err_norm")
    small = lrs[0]
    e = [ep for ep in t.values("epoch") if ep != 0]
    mid = e[len(e) // 2]
    slow = [_estimate(_at(t, lr=small, epoch=ep), "w_err_norm") for ep in (e[0], mid, last)]
    fell = _ratio(_at(t, lr=small, epoch=last), _at(t, lr=small, epoch=mid), "w_err_norm")
    # SGD against least squares on the same data set, run by run, for the lrs that reached a floor
    floors = [lr for lr in sorted(stable["lr"]) if lr >= best["lr"]]
    over_ols = {lr: _paired_columns(_at(t, lr=lr, epoch=last), "w_err_norm", "ols_w_err_norm") for lr in floors}
    steps = [
        _compared(_at(t, epoch=last).select({"lr": [a, b]}), factor="lr", baseline=a)[b]
        for a, b in zip(floors, floors[1:])
    ]
    grows = bool(steps) and all(step.low > 1 for step in steps)
    big = floors[-1]
    noise_var = _noise_var(t)
    floor_big = ""
    if noise_var is not None and t.values("loss") == ["squared"]:
        rms = np.sqrt(
            theory.sgd_stationary_w_err_sq(
                big, int(_one(t, "batch_size")), feature_count(t), noise_var, str(_one(t, "reduction"))
            )
        )
        measured = final[final["lr"] == big].iloc[0]
        floor_big = (
            f"; its root mean square was {measured['w_err_norm_rmse']:.2g} ± "
            f"{_sig(measured['w_err_norm_rmse_mcse'], 1)} (± one MCSE), theory's noise floor of online SGD at that lr "
            f"{float(rms):.2g}, dashed on the figure" + _ragged_text(n, int(_one(t, "batch_size")))
        )
    if not diverging:
        diverged_text = "No lr in the grid diverged."
    elif diverging == [v for v in lrs if v >= diverging[0]]:
        diverged_text = f"From lr {diverging[0]:g} up, most runs diverged."
    else:
        diverged_text = f"Most runs diverged at lr {', '.join(f'{v:g}' for v in diverging)}."
    ratios = "; ".join(f"lr {lr:g}: {over_ols[lr].factor()}" for lr in floors)
    pairs = "; ".join(f"lr {b:g} over {a:g}: {step.factor()}" for (a, b), step in zip(zip(floors, floors[1:]), steps))
    trend = (
        f"grows with the lr (each lr's error over the next smaller one's, on the same data sets: {pairs})"
        if grows
        else f"does not clearly grow with every step of the lr (each lr's error over the next smaller one's, on "
        f"the same data sets: {pairs})"
    )
    answer = (
        f"Error falls with epochs at a rate set by the learning rate: at lr {small:g} the median ‖ŵ − w‖ went "
        f"{slow[0]} → {slow[1]} → {slow[2]} after {e[0]}, {mid} and {last} epochs (each run's error at epoch {last} "
        f"over its own at epoch {mid}: {fell.factor()}). It does not keep improving: it stops at a floor. The data set "
        f"one floor, least squares on the same examples ({floor}, median over the data sets). SGD with a constant lr "
        f"comes near it only when the lr is small enough: after {last} epochs, SGD's error over least squares' on the "
        f"same data set was, {ratios}. Above lr {best['lr']:g} it stalls at a level that {trend}, the noise of the "
        f"last minibatches (lr {big:g}: median {_estimate(_at(t, lr=big, epoch=last), 'w_err_norm')}{floor_big}). "
        + diverged_text
        + " "
        + _precision_text(t)
    )
    return Outcome({"ex4_lr_epochs": table}, {"ex4_lr_epochs": fig}, answer)
