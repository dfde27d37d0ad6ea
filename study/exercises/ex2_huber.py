"""Exercise 2: the squared loss against Huber's (eq. 3.5.1), on Gaussian and heavy-tailed noise."""

from __future__ import annotations

import textwrap
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..analysis import Table, literal, open_table
from ..comparisons import compare
from ..data import OUTLIER_FRACTION
from ..grid import Grid
from ..model import LinearRegression
from ..plots import (
    error_curve,
    loss_shapes,
    merged_legend,
)
from ..runner import run_grid
from ..summaries import summarize
from .common import (
    Estimate,
    Outcome,
    _at,
    _estimate,
    _one,
    _precision_text,
    _require,
)


def _loss_label(t: Table) -> Table:
    """One label per loss: squared ignores sigma (its runs hold none: see
    vocabulary.APPLIES_ONLY; a table from before that rule has a copy of each squared run at
    every sigma, identical by common random numbers, of which the first is kept)."""
    sigmas = t.values("sigma")
    labels = " ".join(f"WHEN sigma = {literal(s)} THEN {literal(f'Huber σ={s:g}')}" for s in sigmas)
    kept = t.filter(f"loss = 'huber' OR sigma IS NULL OR sigma = {literal(sigmas[0])}")
    return kept.derive(loss_sigma=f"CASE WHEN loss = 'squared' THEN 'squared' ELSE (CASE {labels} END) END")


def step_ratio(sigma: float, residual: float | None = None) -> float:
    """The step of Huber (σ) relative to the squared loss at the same lr and residual, measured
    on the model's own losses (autograd on LinearRegression.loss): 1/(2σ) inside Huber's
    quadratic zone (|r| <= σ), since MSELoss (no 1/2) has gradient 2r and Huber r/σ there."""
    r = sigma / 2 if residual is None else residual

    def slope(loss: str) -> float:
        y_hat = torch.tensor([[r]], dtype=torch.float64, requires_grad=True)
        LinearRegression(lr=1.0, loss=loss, sigma=sigma).loss(y_hat, torch.zeros(1, 1, dtype=torch.float64)).backward()
        assert y_hat.grad is not None  # backward() above filled the leaf's gradient
        return float(y_hat.grad)

    return slope("huber") / slope("squared")


def huber_step_check(lr: float = 1.0, sigma: float = 1.0, epochs: int = 3) -> dict:
    """Huber (σ) at lr η against the squared loss at lr η/(2σ), on the same data and start, with
    w and b small enough that every residual stays inside Huber's quadratic zone from the first
    step: the largest difference of ŵ and b̂ over the runs (0: the same numbers)."""
    squared_lr = lr * step_ratio(sigma)
    grid = Grid(
        num_train=[200],
        lr=[squared_lr, lr],
        loss=["squared", "huber"],
        sigma=[sigma],
        epoch=[epochs],
        replicates=3,
        w=[0.05, -0.05],
        b=0.0,
        noise=[0.01],
        num_val=20,
        seed=5,
    )
    df = run_grid(grid, n_jobs=1, progress=False)
    assert df is not None  # without out, run_grid returns the table
    last = df[df["epoch"] == epochs]
    cols = [c for c in df.columns if c.startswith("w_hat_")] + ["b_hat"]
    a = last[(last["loss"] == "squared") & (last["lr"] == squared_lr)].sort_values("replicate")[cols].to_numpy()
    h = last[(last["loss"] == "huber") & (last["lr"] == lr)].sort_values("replicate")[cols].to_numpy()
    return {
        "lr": lr,
        "sigma": sigma,
        "squared_lr": squared_lr,
        "epochs": epochs,
        "runs": len(a),
        "max_abs_difference": float(np.abs(a - h).max()),
    }


def ex2_huber(df: Any) -> Outcome:
    raw = open_table(df)
    _require(raw, "ex2_huber", loss=("squared", "huber"), noise_kind=("gaussian", "outliers"))
    t = _loss_label(raw)
    epochs = t.values("epoch")
    last = int(epochs[-1])
    sizes = t.values("num_train")
    mid = 1000 if 1000 in sizes else int(np.median(sizes))
    table = summarize(t, by=["noise_kind", "loss_sigma", "num_train", "epoch"], ci=0.95)
    sigmas = _at(t, loss="huber").values("sigma")
    lr = float(_one(t, "lr"))
    # Near the solution every residual is inside Huber's quadratic zone, where Huber σ at lr η
    # steps as the squared loss at lr η/(2σ): measured on the model's losses, not assumed.
    ratios = {s: step_ratio(s) for s in sigmas}
    check = huber_step_check()
    steps_text = ", ".join(f"σ={s:g}: {lr * ratios[s]:.3g}" for s in sigmas)
    step_note = (
        f"squared = MSELoss, no ½: l′(r) = 2r. Huber: l′(r) = r/σ for |r| ≤ σ. Inside that zone Huber at "
        f"lr {lr:g} steps as squared at lr {lr:g}/(2σ) ({steps_text})."
    )

    fig_shapes, _ = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_shapes(sigmas, axes=fig_shapes.axes)
    fig_shapes.suptitle("Squared loss (MSELoss, no ½) and Huber's loss (3.5.1): Huber's derivative is bounded by 1")
    fig_shapes.tight_layout(rect=(0, 0.11, 1, 1))
    fig_shapes.text(0.5, 0.01, textwrap.fill(step_note, 110), ha="center", va="bottom", fontsize="small")

    fig, axes = plt.subplots(2, 2, figsize=(14, 8.8), sharey="row")
    order = ["squared", *[f"Huber σ={s:g}" for s in sigmas]]
    names = {"gaussian": "Gaussian noise", "outliers": f"{OUTLIER_FRACTION:.0%} gross outliers"}
    for col, kind in enumerate(["gaussian", "outliers"]):
        sub = _at(t, noise_kind=kind)
        legend: Literal[False] = False
        error_curve(
            _at(sub, num_train=mid).filter("epoch > 0"),
            x="epoch",
            y="w_err_norm",
            hue="loss_sigma",
            hue_order=order,
            floor="ols_w_err_norm",
            ax=axes[0, col],
            legend_title="loss",
            legend=legend,
        )
        axes[0, col].set_title(f"{names[kind]}: num_train={mid}, lr={lr:g}")
        error_curve(
            _at(sub, epoch=last),
            x="num_train",
            y="w_err_norm",
            hue="loss_sigma",
            hue_order=order,
            floor="ols_w_err_norm",
            ax=axes[1, col],
            legend_title="loss",
            legend=legend,
        )
        axes[1, col].set_title(f"{names[kind]}: after {last} epochs, lr={lr:g}")
    for row in range(2):
        merged_legend(axes[row], axes[row, 1], title="loss")
        # The legend serves both panels of its row; theory is drawn on the Gaussian one only.
        for text in axes[row, 1].get_legend().get_texts():
            if text.get_text().startswith("theory:"):
                text.set_text(f"{text.get_text()}, left panel only")
    fig.suptitle("Exercise 2: Huber's loss is slow from a far start but ignores gross outliers")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.text(
        0.5,
        0.005,
        textwrap.fill(
            step_note + " Theory (dashed) is drawn for Gaussian noise and, for SGD, the squared loss only.", 150
        ),
        ha="center",
        va="bottom",
        fontsize="small",
    )

    def est(kind, label, epoch, n=mid):
        return _estimate(_at(t, noise_kind=kind, loss_sigma=label, epoch=epoch, num_train=n), "w_err_norm")

    def against_squared(kind, epoch):
        """Huber σ over the squared loss on the same data sets, by σ (paired)."""
        rows = compare(
            _at(raw, noise_kind=kind, num_train=mid), factor="loss", baseline="squared", by=["sigma"], epoch=epoch
        )
        return {
            f"Huber σ={row['sigma']:g}": (Estimate(row["ratio"], row["ratio_lo"], row["ratio_hi"]), row["wins"])
            for _, row in rows.iterrows()
        }

    def ratio_text(found):
        return "; ".join(f"{label}: {ratio.factor()}" for label, (ratio, _) in found.items())

    huber = [f"Huber σ={s:g}" for s in sigmas]
    best_out = min(huber, key=lambda h: est("outliers", h, last).value)
    early = 3 if 3 in epochs else int(epochs[1])
    ols_out = _estimate(_at(t, noise_kind="outliers", epoch=last, num_train=mid), "ols_w_err_norm")
    same = check["max_abs_difference"] == 0
    start, trained, outliers = (
        against_squared("gaussian", early),
        against_squared("gaussian", last),
        against_squared("outliers", last),
    )
    won = outliers[best_out]
    # Trained, Huber steps as squared at lr·step ratio: read each clear difference against that lr.
    effective = {f"Huber σ={s:g}": lr * ratios[s] for s in sigmas}
    worse = [h for h, (r, _) in trained.items() if r.low > 1]
    better = [h for h, (r, _) in trained.items() if r.high < 1]
    follows = all(effective[h] > lr for h in worse) and all(effective[h] < lr for h in better) and (worse or better)
    why = (
        (
            " The clear differences follow the step: Huber is worse where it steps as squared at a larger lr ("
            + ", ".join(f"{h[6:]}: {effective[h]:.3g}" for h in worse)
            + ") and better where at a smaller one ("
            + ", ".join(f"{h[6:]}: {effective[h]:.3g}" for h in better)
            + "), whose noise floor is lower."
        )
        if follows and worse and better
        else ""
    )
    verdict = "Huber wins" if won[0].high < 1 else "no loss wins clearly"
    answer = (
        f"Huber's loss (3.5.1) is `nn.SmoothL1Loss(beta=σ)`; its derivative is clipped at ±1, so far from the "
        f"solution each example pulls with a bounded force. Compare the two at a given lr with care: `squared` here "
        f"is `nn.MSELoss`, without the book's ½, so its gradient is 2r, while Huber's is r/σ inside |r| ≤ σ "
        f"(measured by autograd on the model's losses: a step ratio of {ratios[sigmas[0]]:.4g} for σ={sigmas[0]:g}"
        + (f", {ratios[sigmas[-1]]:.4g} for σ={sigmas[-1]:g}" if len(sigmas) > 1 else "")
        + "). "
        f"Near the solution Huber at lr {lr:g} therefore steps as the squared loss at lr {lr:g}/(2σ) ({steps_text}); "
        f"with σ = 1, Huber takes half the step of squared: Huber at lr {check['lr']:g} against squared at lr "
        f"{check['squared_lr']:g}, on data whose residuals stay inside the zone, gave "
        + ("exactly the same ŵ and b̂" if same else f"ŵ and b̂ within {check['max_abs_difference']:.2g}")
        + f" ({check['runs']} runs, {check['epochs']} epochs). "
        f"Far from the solution the clipping is the cost: from the start at lr {lr:g}, after {early} epochs on "
        f"{mid} examples with Gaussian noise the median ‖ŵ − w‖ was {est('gaussian', 'squared', early)} with "
        f"the squared loss and {est('gaussian', huber[0], early)} with {huber[0]}; Huber's error over the squared "
        f"loss's on the same data sets: {ratio_text(start)}. That is why Huber looks worse after the seed's 3 epochs. "
        f"Once trained ({last} epochs) under Gaussian noise, squared reached {est('gaussian', 'squared', last)}, and "
        f"Huber over squared was {ratio_text(trained)}.{why} With {names['outliers']}, {verdict}: {best_out} reached "
        f"{est('outliers', best_out, last)} against {est('outliers', 'squared', last)} for the squared loss "
        f"({ratio_text(outliers)}; {best_out} had the smaller error on {won[1]:.0%} of the data sets), whose floor is "
        f"least squares ({ols_out}, over the data sets), itself dragged by the outliers. " + _precision_text(raw)
    )
    return Outcome({"ex2_huber": table}, {"ex2_huber_losses": fig_shapes, "ex2_huber": fig}, answer)
