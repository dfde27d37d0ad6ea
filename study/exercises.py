"""The exercises of d2l §3.5 as studies: a grid, tables, figures and a short answer each.

Each study reads its grid from ``experiments/<name>.toml``, runs it with :func:`run_grid`
(the raw table goes to ``results/raw/<name>.csv``, git-ignored), and writes its summary tables
to ``results/``, its figures to ``figures/`` (PNG, or the formats asked for), and its answer to
``results/answers.md``. Every number in a figure or an answer is computed from the table the
study ran: counts, ranges, slopes and their signs. ``quick=True`` shrinks every grid (fewer
replicates, sizes and epochs) for a preview in seconds.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from . import theory
from .data import OUTLIER_FRACTION, SyntheticRegressionData
from .exercise_runner import EXPERIMENTS, LAYOUT, SPECS, check_numbers, run_studies
from .analysis import Table, literal, open_table, quote
from .grid import Grid
from .model import LinearRegression
from .plots import (
    LABELS, PALETTE, error_curve, error_facets, feature_count, heatmap_facets, loss_shapes, lr_epoch_heatmap,
    merged_legend, save_figure,
)
from .results import (
    LEAST_SQUARES, MIN_FIT_LEVELS, SUMMARY_DIGITS, ParameterError, PoolingError, at_epoch, axes_of, fit_power_law,
    summarize, values_text, write_csv,
)
from .runner import run_grid
from .train import Trainer

__all__ = ["STUDIES", "Outcome", "run_exercises", "seed_example", "EXPERIMENTS", "GENERIC_FIGURES", "figure_names",
           "draw_figure", "draw_xy", "gradient_access", "huber_step_check", "step_ratio", "check_numbers", "LAYOUT"]



def seed_example(lr: float = 0.03, loss: str = "squared", epochs: int = 3, num_train: int = 1000, seed: int = 0) -> dict:
    """The section's own example (``study demo``): w = [2, -3.4], b = 4.2, trained by the
    reference loop, and its errors as the book prints them (w − ŵ, b − b̂), beside least
    squares on the same data."""
    model = LinearRegression(lr=lr, loss=loss)
    data = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2, num_train=num_train, seed=seed)
    Trainer(max_epochs=epochs).fit(model, data)
    w, b = model.get_w_b()
    w_ols, b_ols = theory.least_squares(data.X_train, data.y_train)
    return {"w": data.w - w.reshape(data.w.shape), "b": data.b - b, "ols_w": (data.w.double() - w_ols).numpy(),
            "ols_b": data.b - float(b_ols)}


@dataclass
class Outcome:
    """What a study produced: tables and figures by file stem, and its answer in markdown."""

    tables: dict[str, pd.DataFrame]
    figures: dict[str, plt.Figure]
    answer: str


def _at(t: Table, **where: Any) -> Table:
    """The rows whose columns hold the given values."""
    return t.select({column: [value] for column, value in where.items()})


def _median(t: Table, column: str) -> float:
    """The median |column|: SGD's over the runs that did not diverge; least squares' over every
    run, once per data stream (it never diverges, and runs on the same data share it)."""
    return t.median(column, per_stream=column in LEAST_SQUARES)


def _one(t: Table, column: str) -> Any:
    """The first value a column takes (a setting the grid holds fixed, where it is one)."""
    return t.values(column)[0]


def _require(t: Table, figure: str, **needed: Sequence) -> None:
    """Refuse a table that lacks what an exercise's figure is drawn from."""
    for axis, values in needed.items():
        have = t.values(axis)
        missing = [v for v in values if v not in have]
        if missing:
            raise ParameterError("figure", "parameter of draw_figure",
                                 f"a figure the table can draw ({figure} needs {axis} = {values_text(list(values))}; "
                                 f"the table has {axis} = {values_text(have)})", figure)


def _noise_var(t: Table) -> float | None:
    """σ² where the table's noise is one Gaussian level, else None (theory's quantiles need it)."""
    if t.values("noise_kind") != ["gaussian"] or len(t.values("noise")) != 1:
        return None
    return float(theory.noise_variance(float(_one(t, "noise")), "gaussian"))


def _grid_step(values: Sequence[float]) -> float:
    """The typical ratio between neighbouring values of a log-spaced axis."""
    v = np.sort(np.unique(np.asarray(values, dtype=float)))
    return float(np.exp(np.median(np.diff(np.log(v))))) if len(v) > 1 else float("nan")


# --- 1. mean vs sum ------------------------------------------------------------------------

def ex1_reduction(df: Any) -> Outcome:
    t = open_table(df)
    _require(t, "ex1_reduction", reduction=("mean", "sum"))
    epochs = t.values("epoch")
    epoch = 3 if 3 in epochs else int(epochs[-1])
    at = _at(t, epoch=epoch)
    bs = int(_one(at, "batch_size"))
    n = int(_one(at, "num_train"))
    d = feature_count(t)
    table = summarize(at, by=["reduction", "lr"])
    rows = []
    for reduction, cells in table.groupby("reduction", observed=True):
        stable = cells[cells["diverged"] == 0]
        diverging = cells[cells["diverged"] > cells["count"] / 2]
        best = stable.loc[stable["w_err_norm_median"].idxmin()] if len(stable) else None
        rows.append({"reduction": reduction, "epoch": epoch,
                     "best_lr": best["lr"] if best is not None else np.nan,
                     "best_w_err_norm_median": best["w_err_norm_median"] if best is not None else np.nan,
                     "largest_stable_lr": stable["lr"].max() if len(stable) else np.nan,
                     "smallest_diverging_lr": diverging["lr"].min() if len(diverging) else np.nan,
                     "theory_stability_edge": float(theory.sgd_stability_edge(bs, d, str(reduction)))})
    best = pd.DataFrame(rows)
    b = best.set_index("reduction")
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
    ols = _median(at, "ols_w_err_norm")
    for ax in axes:
        ax.axhline(ols, color="0.45", linewidth=1.2, label=f"least squares on the same data, median ({ols:.2g})")
    merged_legend(axes, axes[1], title="reduction")
    fig.suptitle("Exercise 1: the loss summed over the minibatch needs a learning rate batch_size times smaller")
    fig.tight_layout()
    ragged = n % bs
    step = _grid_step(at.values("lr"))
    answer = (
        f"Summing instead of averaging multiplies the gradient of a full minibatch by its size B = {bs}, so the "
        f"learning rate must be divided by B to take the same steps. Measured after {epoch} epochs on {n} "
        f"examples: the best lr was {b.loc['mean', 'best_lr']:.3g} with `mean` and {b.loc['sum', 'best_lr']:.3g} "
        f"with `sum` (ratio {ratio:.3g}), and most runs diverged from lr {b.loc['mean', 'smallest_diverging_lr']:.3g} "
        f"and {b.loc['sum', 'smallest_diverging_lr']:.3g} (ratio {ratio_div:.3g}); the grid's lrs are "
        f"{step:.2g} times apart, so the ratios are B to within that step. Theory for online SGD on the squared loss "
        f"(`study.theory.sgd_stability_edge`) puts the edge at lr {b.loc['mean', 'theory_stability_edge']:.2g} for "
        f"`mean` and {b.loc['sum', 'theory_stability_edge']:.2g} for `sum`, the same ratio B; the largest lr with no "
        f"diverged run was {b.loc['mean', 'largest_stable_lr']:.3g} and {b.loc['sum', 'largest_stable_lr']:.3g} (a finite "
        f"training set run for {epoch} epochs is not the online limit). Rescaled, the two curves lie on top of each "
        f"other except for the ragged last minibatch: {n} = {n // bs}·{bs} + {ragged}"
        + (f", and with `sum` that last step is {ragged}/{bs} as large as with `mean`, which weights its {ragged} "
           f"examples as much as a full batch. So lr_sum = lr_mean / B exactly when B divides num_train, and nearly "
           f"so otherwise." if ragged else ", so every minibatch is full and lr_sum = lr_mean / B exactly.")
    )
    return Outcome({"ex1_reduction": table, "ex1_best_lr": best}, {"ex1_reduction": fig}, answer)


# --- 2. squared vs Huber -------------------------------------------------------------------

def _loss_label(t: Table) -> Table:
    """One label per loss: squared ignores sigma, so its runs at other sigmas (identical by
    common random numbers) are dropped."""
    sigmas = t.values("sigma")
    labels = " ".join(f"WHEN sigma = {literal(s)} THEN {literal(f'Huber σ={s:g}')}" for s in sigmas)
    kept = t.filter(f"loss = 'huber' OR sigma = {literal(sigmas[0])}")
    return kept.derive(loss_sigma=f"CASE WHEN loss = 'squared' THEN 'squared' ELSE (CASE {labels} END) END")


def step_ratio(sigma: float, residual: float | None = None) -> float:
    """The step of Huber (σ) relative to the squared loss at the same lr and residual, measured
    on the model's own losses (autograd on LinearRegression.loss): 1/(2σ) inside Huber's
    quadratic zone (|r| <= σ), since MSELoss (no 1/2) has gradient 2r and Huber r/σ there."""
    r = sigma / 2 if residual is None else residual

    def slope(loss: str) -> float:
        y_hat = torch.tensor([[r]], dtype=torch.float64, requires_grad=True)
        LinearRegression(lr=1.0, loss=loss, sigma=sigma).loss(y_hat, torch.zeros(1, 1, dtype=torch.float64)).backward()
        return float(y_hat.grad)

    return slope("huber") / slope("squared")


def huber_step_check(lr: float = 1.0, sigma: float = 1.0, epochs: int = 3) -> dict:
    """Huber (σ) at lr η against the squared loss at lr η/(2σ), on the same data and start, with
    w and b small enough that every residual stays inside Huber's quadratic zone from the first
    step: the largest difference of ŵ and b̂ over the runs (0: the same numbers)."""
    squared_lr = lr * step_ratio(sigma)
    grid = Grid(num_train=[200], lr=[squared_lr, lr], loss=["squared", "huber"], sigma=[sigma], epoch=[epochs],
                replicates=3, w=[0.05, -0.05], b=0.0, noise=0.01, num_val=20, seed=5)
    df = run_grid(grid, n_jobs=1, progress=False)
    last = df[df["epoch"] == epochs]
    cols = [c for c in df.columns if c.startswith("w_hat_")] + ["b_hat"]
    a = last[(last["loss"] == "squared") & (last["lr"] == squared_lr)].sort_values("replicate")[cols].to_numpy()
    h = last[(last["loss"] == "huber") & (last["lr"] == lr)].sort_values("replicate")[cols].to_numpy()
    return {"lr": lr, "sigma": sigma, "squared_lr": squared_lr, "epochs": epochs, "runs": len(a),
            "max_abs_difference": float(np.abs(a - h).max())}


def ex2_huber(df: Any) -> Outcome:
    t = open_table(df)
    _require(t, "ex2_huber", loss=("squared", "huber"), noise_kind=("gaussian", "outliers"))
    t = _loss_label(t)
    epochs = t.values("epoch")
    last = int(epochs[-1])
    sizes = t.values("num_train")
    mid = 1000 if 1000 in sizes else int(np.median(sizes))
    table = summarize(t, by=["noise_kind", "loss_sigma", "num_train", "epoch"])
    sigmas = _at(t, loss="huber").values("sigma")
    lr = float(_one(t, "lr"))
    # Near the solution every residual is inside Huber's quadratic zone, where Huber σ at lr η
    # steps as the squared loss at lr η/(2σ): measured on the model's losses, not assumed.
    ratios = {s: step_ratio(s) for s in sigmas}
    check = huber_step_check()
    steps_text = ", ".join(f"σ={s:g}: {lr * ratios[s]:.3g}" for s in sigmas)
    step_note = (f"squared = MSELoss, no ½: l′(r) = 2r. Huber: l′(r) = r/σ for |r| ≤ σ. Inside that zone Huber at "
                 f"lr {lr:g} steps as squared at lr {lr:g}/(2σ) ({steps_text}).")

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
        legend = False
        error_curve(_at(sub, num_train=mid).filter("epoch > 0"), x="epoch", y="w_err_norm", hue="loss_sigma",
                    hue_order=order, floor="ols_w_err_norm", ax=axes[0, col], legend_title="loss", legend=legend)
        axes[0, col].set_title(f"{names[kind]}: num_train={mid}, lr={lr:g}")
        error_curve(_at(sub, epoch=last), x="num_train", y="w_err_norm", hue="loss_sigma", hue_order=order,
                    floor="ols_w_err_norm", ax=axes[1, col], legend_title="loss", legend=legend)
        axes[1, col].set_title(f"{names[kind]}: after {last} epochs, lr={lr:g}")
    for row in range(2):
        merged_legend(axes[row], axes[row, 1], title="loss")
    fig.suptitle("Exercise 2: Huber's loss is slow from a far start but ignores gross outliers")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.text(0.5, 0.005, textwrap.fill(step_note + " Theory (dashed) is drawn for Gaussian noise and, for SGD, the "
                                       "squared loss only.", 150), ha="center", va="bottom", fontsize="small")

    def med(kind, label, epoch, n=mid):
        return _median(_at(t, noise_kind=kind, loss_sigma=label, epoch=epoch, num_train=n), "w_err_norm")

    huber = [f"Huber σ={s:g}" for s in sigmas]
    best_out = min(huber, key=lambda h: med("outliers", h, last))
    early = 3 if 3 in epochs else int(epochs[1])
    ols_out = _median(_at(t, noise_kind="outliers", epoch=last, num_train=mid), "ols_w_err_norm")
    same = check["max_abs_difference"] == 0
    answer = (
        f"Huber's loss (3.5.1) is `nn.SmoothL1Loss(beta=σ)`; its derivative is clipped at ±1, so far from the "
        f"solution each example pulls with a bounded force. Compare the two at a given lr with care: `squared` here "
        f"is `nn.MSELoss`, without the book's ½, so its gradient is 2r, while Huber's is r/σ inside |r| ≤ σ "
        f"(measured by autograd on the model's losses: a step ratio of {ratios[sigmas[0]]:.4g} for σ={sigmas[0]:g}"
        + (f", {ratios[sigmas[-1]]:.4g} for σ={sigmas[-1]:g}" if len(sigmas) > 1 else "") + "). "
        f"Near the solution Huber at lr {lr:g} therefore steps as the squared loss at lr {lr:g}/(2σ) ({steps_text}); "
        f"with σ = 1, Huber takes half the step of squared: Huber at lr {check['lr']:g} against squared at lr "
        f"{check['squared_lr']:g}, on data whose residuals stay inside the zone, gave "
        + ("exactly the same ŵ and b̂" if same else f"ŵ and b̂ within {check['max_abs_difference']:.2g}")
        + f" ({check['runs']} runs, {check['epochs']} epochs). "
        f"Far from the solution the clipping is the cost: from the start at lr {lr:g}, after {early} epochs on "
        f"{mid} examples with Gaussian noise the median ‖ŵ − w‖ was {med('gaussian', 'squared', early):.2g} with "
        f"the squared loss and {med('gaussian', huber[0], early):.2g} with {huber[0]} "
        f"({med('gaussian', huber[-1], early):.2g} with {huber[-1]}), which is why Huber looks worse after the "
        f"seed's 3 epochs. Once trained ({last} epochs) under Gaussian noise: {med('gaussian', 'squared', last):.2g} "
        f"(squared) and {med('gaussian', huber[0], last):.2g} ({huber[0]}). With {names['outliers']} Huber wins: "
        f"{med('outliers', best_out, last):.2g} with {best_out} against {med('outliers', 'squared', last):.2g} for "
        f"the squared loss, whose floor is least squares ({ols_out:.2g}, over every run), itself dragged by the outliers."
    )
    return Outcome({"ex2_huber": table}, {"ex2_huber_losses": fig_shapes, "ex2_huber": fig}, answer)


# --- 3. gradients --------------------------------------------------------------------------

def gradient_access(seed: int = 0, epochs: int = 3) -> pd.DataFrame:
    """The seed's example once more, reading the gradient where PyTorch keeps it."""
    model = LinearRegression(lr=0.03)
    data = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2, seed=seed)
    trainer = Trainer(max_epochs=epochs).fit(model, data)
    last_batch = data.num_train - (data.num_train - 1) // data.batch_size * data.batch_size
    grad_w = model.net.weight.grad.reshape(-1)
    full = trainer.history[-1]
    return pd.DataFrame({
        "quantity": ["model.net.weight.grad (last minibatch)", "full-batch gradient at the end"],
        "examples": [last_batch, data.num_train],
        "batch_size": [data.batch_size, data.batch_size],
        "grad_w_0": [float(grad_w[0]), float(full.grad_w[0])],
        "grad_w_1": [float(grad_w[1]), float(full.grad_w[1])],
        "grad_b": [float(model.net.bias.grad), full.grad_b],
    })


def ex3_gradients(df: Any) -> Outcome:
    t = open_table(df)
    table = t.medians(["lr", "epoch"], ["grad_w_norm", "grad_b_abs", "w_err_norm"])
    access = gradient_access()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    error_curve(t, x="epoch", y="grad_w_norm", hue="lr", ax=axes[0], logx=False, legend=False)
    error_curve(t, x="epoch", y="grad_b", hue="lr", ax=axes[1], logx=False, legend=False)
    merged_legend(axes, axes[1], title="lr")
    axes[0].set_title("full-batch gradient of the training loss, weights")
    axes[1].set_title("full-batch gradient of the training loss, bias")
    fig.suptitle(f"Exercise 3: the full-batch gradient against epoch (num_train={int(_one(t, 'num_train'))})")
    fig.tight_layout()

    epochs = [e for e in t.values("epoch") if e != 0]
    last, earlier = epochs[-1], epochs[max(0, (2 * len(epochs)) // 3 - 1)]
    lrs = t.values("lr")
    g = {lr: _median(_at(t, lr=lr, epoch=last), "grad_w_norm") for lr in lrs}
    change = {lr: g[lr] / _median(_at(t, lr=lr, epoch=earlier), "grad_w_norm") for lr in lrs}
    g0 = _median(_at(t, epoch=0), "grad_w_norm")
    n, bs, ragged = int(access["examples"][1]), int(access["batch_size"][0]), int(access["examples"][0])
    answer = (
        "PyTorch keeps a parameter's gradient on the parameter: `model.net.weight.grad` and "
        "`model.net.bias.grad` (the seed's `get_w_b` reads `.data`, its gradient is `.grad`). After `fit` "
        f"they hold the gradient of the *last minibatch* only, here of {ragged} examples "
        f"({n} = {(n - ragged) // bs}·{bs} + {ragged}): ‖grad‖ = "
        f"{np.hypot(access['grad_w_0'][0], access['grad_w_1'][0]):.2g}, while the full-batch gradient at the same "
        f"point is {np.hypot(access['grad_w_0'][1], access['grad_w_1'][1]):.2g}; the full-batch gradient needs a pass "
        "of its own (`torch.autograd.grad`, as the checkpoints here do, so `.grad` is left as SGD left it). "
        f"From {g0:.2g} at the start, after {last} epochs the median full-batch ‖∇_w L‖ was "
        + ", ".join(f"{g[lr]:.1g} at lr {lr:g}" for lr in lrs)
        + f"; from epoch {earlier} to {last} it changed by a factor of "
        + ", ".join(f"{change[lr]:.2g}" for lr in lrs)
        + " respectively: where that factor is well below 1 SGD is still descending, where it is near 1 it has "
          "stopped at the noise of its minibatches, which grows with the lr."
    )
    return Outcome({"ex3_gradients": table, "ex3_grad_access": access}, {"ex3_gradients": fig}, answer)


# --- 4. learning rate x epochs -------------------------------------------------------------

def ex4_lr_epochs(df: Any) -> Outcome:
    t = open_table(df)
    table = summarize(t, by=["lr", "epoch"])
    n = int(_one(t, "num_train"))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.4), gridspec_kw={"width_ratios": [1.0, 1.1]})
    lr_epoch_heatmap(t, ax=axes[0])
    axes[0].set_title("median ‖ŵ − w‖ (grey: most runs diverged)")
    error_curve(t.filter("epoch > 0"), x="epoch", y="w_err_norm", hue="lr", floor="ols_w_err_norm", ax=axes[1],
                legend_title="lr", legend="outside")
    axes[1].set_title("error against epoch, with least squares on the same data")
    fig.suptitle(f"Exercise 4: more epochs help until a floor set by the data and, for SGD, by the learning rate "
                 f"(num_train={n})")
    fig.tight_layout()

    last = int(t.values("epoch")[-1])
    final = table[table["epoch"] == last]
    stable = final[final["diverged"] == 0]
    best = stable.loc[stable["w_err_norm_median"].idxmin()]
    diverging = sorted(final[final["diverged"] > final["count"] / 2]["lr"])
    lrs = t.values("lr")
    floor = _median(_at(t, epoch=last), "ols_w_err_norm")
    small = lrs[0]
    e = [ep for ep in t.values("epoch") if ep != 0]
    slow = [_median(_at(t, lr=small, epoch=ep), "w_err_norm") for ep in (e[0], e[len(e) // 2], last)]
    big = max(stable["lr"])
    noise_var = _noise_var(t)
    floor_big = ""
    if noise_var is not None and t.values("loss") == ["squared"]:
        rms = np.sqrt(theory.sgd_stationary_w_err_sq(big, int(_one(t, "batch_size")), feature_count(t), noise_var,
                                                     str(_one(t, "reduction"))))
        floor_big = f"; theory's noise floor of online SGD at that lr is {float(rms):.2g} RMS, dashed on the figure"
    if not diverging:
        diverged_text = "No lr in the grid diverged."
    elif diverging == [v for v in lrs if v >= diverging[0]]:
        diverged_text = f"From lr {diverging[0]:g} up, most runs diverged."
    else:
        diverged_text = f"Most runs diverged at lr {', '.join(f'{v:g}' for v in diverging)}."
    answer = (
        f"Error falls with epochs at a rate set by the learning rate: at lr {small:g} the median ‖ŵ − w‖ went "
        f"{slow[0]:.2g} → {slow[1]:.2g} → {slow[2]:.2g} after {e[0]}, {e[len(e) // 2]} and {last} epochs. It does "
        f"not keep improving: it stops at a floor. The data set one floor, least squares on the same examples "
        f"({floor:.2g}, median over every run); SGD with a constant lr comes near it only when the lr is small enough "
        f"(after {last} epochs lr {best['lr']:g} was at {best['w_err_norm_median']:.2g}) and otherwise stalls above "
        f"it at a level that grows with the lr, the noise of the last minibatches (lr {big:g}: "
        f"{_median(_at(t, lr=big, epoch=last), 'w_err_norm'):.2g}{floor_big}). " + diverged_text
    )
    return Outcome({"ex4_lr_epochs": table}, {"ex4_lr_epochs": fig}, answer)


# --- 5. amount of data ---------------------------------------------------------------------

def _fit_row(quantity: str, rows: Table, column: str, fit_from: float) -> tuple[dict, Any]:
    """One row of the slopes table, fitted over num_train >= fit_from with one unit per data
    stream (the figure's legend draws its slopes from the same rows, by the same function):
    SGD's over the runs that did not diverge, least squares' once per stream."""
    part = rows.filter(f"num_train >= {literal(fit_from)}").stream_values(
        ["num_train"], column, diverged=column not in LEAST_SQUARES, per_stream=column in LEAST_SQUARES)
    sizes = part["num_train"].nunique()
    row = {"quantity": quantity, "fit_from": fit_from, "sizes": sizes}
    if sizes < MIN_FIT_LEVELS:
        return {**row, "slope": np.nan, "prefactor": np.nan, "low": np.nan, "high": np.nan, "units": np.nan}, None
    fit = fit_power_law(part["num_train"], part["v"], units=part["seed"])
    return {**row, "slope": fit.slope, "prefactor": fit.prefactor, "low": fit.low, "high": fit.high,
            "units": fit.units}, fit


def ex5_data_size(df: Any) -> Outcome:
    t = open_table(df)
    _require(t, "ex5_data_size", loss=("squared",))
    last = int(t.values("epoch")[-1])
    table = summarize(t, by=["num_train", "lr", "loss", "epoch"])
    lrs = t.values("lr")
    lr = 0.03 if 0.03 in lrs else lrs[len(lrs) // 2]
    final = _at(t, epoch=last)
    squared = _at(final, loss="squared")
    seed_like = _at(squared, lr=lr)
    sizes = [int(n) for n in t.values("num_train")]
    # SGD's slope where its optimisation gap has closed: from n = 1000, or lower where fewer
    # than MIN_FIT_LEVELS sizes lie above it.
    big = min(1000, sizes[-MIN_FIT_LEVELS]) if len(sizes) >= MIN_FIT_LEVELS else sizes[0]
    # Least squares from every squared-loss run, one value per data stream: the rows and the
    # function the figure's grey line is fitted with.
    ols_row, ols = _fit_row("ols_w_err_norm", squared, "ols_w_err_norm", sizes[0])
    ols_b_row, ols_b = _fit_row("ols_b_err_abs", squared, "ols_b_err", sizes[0])
    slopes, sgd_fits = [ols_row, ols_b_row], {}
    for rate in lrs:
        part = _at(squared, lr=rate)
        row, sgd_fits[rate] = _fit_row(f"w_err_norm (SGD, squared, lr={rate:g}, epoch {last})", part, "w_err_norm",
                                       big)
        slopes.append(row)
    noise_var, d = _noise_var(t), feature_count(t)
    theory_slope = None
    if noise_var is not None and len(sizes) >= MIN_FIT_LEVELS and sizes[0] > d:
        medians = theory.ols_w_err_norm_quantile(0.5, np.array(sizes), d, noise_var)
        theory_slope = float(np.polyfit(np.log(sizes), np.log(medians), 1)[0])
        slopes.append({"quantity": "ols_w_err_norm (theory: median, Gaussian noise)", "fit_from": sizes[0],
                       "sizes": len(sizes), "slope": theory_slope, "prefactor": np.nan, "low": np.nan, "high": np.nan,
                       "units": np.nan})
    slopes = pd.DataFrame(slopes)

    fig, axes = plt.subplots(2, 2, figsize=(13.5, 12))
    error_curve(squared, x="num_train", y="w_err_norm", hue="lr", floor="ols_w_err_norm", fit_from=big,
                ax=axes[0, 0], legend="below",
                legend_title=f"lr (squared loss, epoch {last}); SGD slopes for n ≥ {big:,}")
    axes[0, 0].set_title("‖ŵ − w‖ against the amount of data")
    components = [seed_like.derive(quantity=literal(LABELS[c]), value=f"abs({quote(c)})")
                  for c in ("w_err_0", "w_err_1", "b_err") if c in seed_like.columns]
    parts = components[0].union(*components[1:])
    error_curve(parts, x="num_train", y="value", hue="quantity", ax=axes[0, 1], ylabel="absolute error",
                legend_title=f"component (lr {lr:g}, squared, epoch {last})", legend="upper right")
    axes[0, 1].set_title("each component of w, and b")
    split = seed_like.derive(part=literal("total ‖ŵ − w‖"), value="w_err_norm").union(
        seed_like.derive(part=literal("optimisation gap ‖ŵ − ŵ_ols‖"), value="gap_w_norm"),
        seed_like.derive(part=literal("statistical error ‖ŵ_ols − w‖"), value="ols_w_err_norm", diverged="FALSE"))
    error_curve(split, x="num_train", y="value", hue="part", ax=axes[1, 0], ylabel="‖·‖₂", legend="upper right",
                hue_order=["total ‖ŵ − w‖", "optimisation gap ‖ŵ − ŵ_ols‖", "statistical error ‖ŵ_ols − w‖"],
                legend_title=f"lr {lr:g}, squared, epoch {last}")
    axes[1, 0].set_title("the error split: optimisation gap and statistical error")
    spacing = _log_spacing_panel(squared, sizes, axes[1, 1])
    fig.suptitle(f"Exercise 5: estimation error against the amount of data ({len(sizes)} sizes from {sizes[0]:,} "
                 f"to {sizes[-1]:,})")
    fig.tight_layout()

    def med(n, column):
        return _median(_at(seed_like, num_train=n), column)

    def steps(n):
        return int(_one(_at(seed_like, num_train=n), "steps"))

    small = sizes[0]
    sgd = sgd_fits.get(lr)
    floor_text = ""
    if noise_var is not None:
        rms = float(np.sqrt(theory.sgd_stationary_w_err_sq(lr, int(_one(seed_like, "batch_size")), d, noise_var,
                                                            str(_one(seed_like, "reduction")))))
        floor_text = f"theory's floor for online SGD at lr {lr:g}: {rms:.2g} RMS, dashed on the figure"
    ols_text = f"falls as n^{ols.slope:.2f}" if ols is not None and ols.high < 0 else None
    answer = (
        (f"Least squares on the same data {ols.trend('n')} for w (one value per data set, {ols.units} data sets)"
         if ols is not None else f"Least squares: {len(sizes)} sizes are too few to fit a slope to")
        + (f"; theory's median for Gaussian noise gives {theory_slope:.2f} over the same sizes (−1/2 for large n, "
           f"steeper near n = d + 1: ‖ŵ_ols − w‖² ~ σ² d/(n − d) · F(d, n − d))" if theory_slope is not None else "")
        + (f"; for b it {ols_b.trend('n')}" if ols_b is not None else "")
        + (". At slope −1/2, four times the data halves the error" if ols_text else "")
        + f". SGD for a fixed {last} epochs gains twice from more data, more information and more steps: at lr "
        f"{lr:g} its median ‖ŵ − w‖ went from {med(small, 'w_err_norm'):.2g} at n = {small:,} (only {steps(small)} "
        f"steps, optimisation gap {med(small, 'gap_w_norm'):.2g}) to {med(sizes[-1], 'w_err_norm'):.2g} at "
        f"n = {sizes[-1]:,} ({steps(sizes[-1])} steps, gap {med(sizes[-1], 'gap_w_norm'):.2g}, least squares "
        f"{med(sizes[-1], 'ols_w_err_norm'):.2g}); "
        + (f"from n = {big:,} on ({sgd.levels} sizes) it {sgd.trend('n')}" if sgd is not None else
           f"there are too few sizes from n = {big:,} on to fit its slope")
        + (f": within this grid more data no longer lowers it clearly, as expected once SGD sits at the noise floor "
           f"of a constant lr ({floor_text})" if sgd is not None and sgd.high >= 0 and floor_text else "")
        + f". Log spacing is right because the error is a power law: equal ratios of n give equal steps on a log-log "
        f"plot, so {spacing['count']} sizes from {sizes[0]:,} to {sizes[-1]:,} cover {spacing['log_decades']:.1f} "
        f"decades, over which the least-squares error changes {spacing['log_change']:.0f}-fold, while "
        f"{spacing['count']} evenly spaced sizes ({spacing['linear'][0]:,}, {spacing['linear'][1]:,}, …, "
        f"{spacing['linear'][-1]:,}) cover {spacing['linear_decades']:.1f} decades, where it changes "
        f"{spacing['linear_change']:.1f}-fold, and never see the small-data regime where it changes most."
    )
    return Outcome({"ex5_data_size": table, "ex5_slopes": slopes}, {"ex5_data_size": fig}, answer)


def _log_spacing_panel(runs: Table, sizes: list[int], ax: plt.Axes) -> dict:
    """Why the hint's log spacing serves: the same budget of sizes, spread two ways, on the
    least-squares medians (one value per data stream). Returns what the panel shows, for the
    answer to quote."""
    points, _ = runs.point_stats(["num_train"], "ols_w_err_norm", diverged=False, per_stream=True)
    curve = points.set_index("num_train")["median"]
    ax.plot(curve.index, curve.values, color="0.45", marker="s", markersize=3, label="least squares, median (measured)")
    logs = np.array(sizes)
    linear = np.linspace(sizes[-1] / len(sizes), sizes[-1], len(sizes)).round().astype(int)
    y_log = np.exp(np.interp(np.log(logs), np.log(curve.index), np.log(curve.values)))
    y_lin = np.exp(np.interp(np.log(linear), np.log(curve.index), np.log(curve.values)))
    colors = sns.color_palette(PALETTE, 2)
    shown = ", ".join(f"{v:,}" for v in logs[:3]) + (f", …, {logs[-1]:,}" if len(logs) > 3 else "")
    ax.plot(logs, y_log, "o", color=colors[0], markersize=7, label=f"{len(logs)} log-spaced sizes: {shown}")
    ax.plot(linear, y_lin, "s", color=colors[1], markerfacecolor="none", markersize=10, markeredgewidth=1.5,
            label=f"{len(linear)} evenly spaced sizes: {linear[0]:,}, {linear[1]:,}, …, {linear[-1]:,}")
    ax.set(xscale="log", yscale="log", xlabel=LABELS["num_train"], ylabel="least squares ‖ŵ_ols − w‖₂")
    ax.set_title(f"why log spacing: the same {len(sizes)} sizes, spread two ways")
    ax.legend(fontsize="small", loc="upper right")
    return {"count": len(sizes), "linear": [int(v) for v in linear],
            "log_decades": float(np.log10(logs[-1] / logs[0])), "linear_decades": float(np.log10(linear[-1] / linear[0])),
            "log_change": float(y_log.max() / y_log.min()), "linear_change": float(y_lin.max() / y_lin.min())}


# --- running them --------------------------------------------------------------------------

@dataclass(frozen=True)
class Study:
    number: int
    name: str
    analyse: Callable[[Any], Outcome]  # a results table: a DataFrame, a path or a study.analysis.Table
    quick: dict  # overrides of the grid for --quick


_ANALYSES = {1: ex1_reduction, 2: ex2_huber, 3: ex3_gradients, 4: ex4_lr_epochs, 5: ex5_data_size}
STUDIES = {n: Study(n, name, _ANALYSES[n], quick) for n, (name, quick) in SPECS.items()}


def run_study(number: int, grid: Grid, *, out_dir: Path, n_jobs: int = -1, progress: bool = True,
              formats: Sequence[str] = (".png",)) -> tuple[Outcome, int, float, list[Path]]:
    """One study: its grid run (the raw table in results/raw/, its runs kept in the store beside
    it), its tables and figures written under ``out_dir``. Returns its outcome, its runs, its
    seconds and the files written."""
    study, started = STUDIES[number], time.perf_counter()
    raw = out_dir / "results" / "raw" / f"{study.name}.csv"
    run_grid(grid, out=raw, n_jobs=n_jobs, progress=progress, frame=False)
    outcome = study.analyse(raw)  # from the file, as a table of any size is: never loaded whole
    written = []
    for name, table in outcome.tables.items():
        write_csv(table, out_dir / "results" / f"{name}.csv", significant=SUMMARY_DIGITS)
        written.append(out_dir / "results" / f"{name}.csv")
    for name, fig in outcome.figures.items():
        written += save_figure(fig, out_dir / "figures" / f"{name}.png", formats=formats)
    return outcome, grid.n_runs, time.perf_counter() - started, written


def run_exercises(numbers=None, *, quick: bool = False, out_dir: str | Path = ".", n_jobs: int = -1,
                  progress: bool = True, log: Callable[[str], None] = print,
                  formats: Sequence[str] = (".png",)) -> dict[int, Outcome]:
    """Run the studies (all five by default) and write their tables, figures and answers under
    ``out_dir``: results/ (summary CSVs, answers.md), results/raw/ (the raw tables) and
    figures/ (in each of ``formats``: ".png", ".svg", ".pdf"). ``out_dir`` must exist; the
    folders under it are created as needed, each named through ``log``. With ``n_jobs`` -1 or
    above 1, the studies run side by side, one process each (see study.exercise_runner).

    Returns
    -------
    dict
        Exercise number -> :class:`Outcome` (its figures closed once written).
    """
    return run_studies(numbers, quick=quick, out_dir=out_dir, n_jobs=n_jobs, progress=progress, log=log,
                       formats=formats, keep=True)


# --- figures of any results table (study plot) ---------------------------------------------

#: Figures `study plot` draws from any results table: the error against one axis, or a heatmap.
GENERIC_FIGURES = {"error-vs-num_train": "num_train", "error-vs-epoch": "epoch", "error-vs-lr": "lr",
                   "heatmap": None}
#: The axes a named figure puts on its lines, then on its columns and rows, where the user did
#: not: the first that vary, in this order.
_AUTO_AXES = ("lr", "loss", "num_train", "reduction", "sigma", "noise_kind", "noise", "batch_size", "epoch")
EXERCISE_FIGURES = ("ex1_reduction", "ex2_huber_losses", "ex2_huber", "ex3_gradients", "ex4_lr_epochs", "ex5_data_size")


def figure_names() -> list[str]:
    """What ``study plot --figure`` accepts: the generic figures and every exercise's figures."""
    return [*GENERIC_FIGURES, *EXERCISE_FIGURES]


def _title(y: str, x: str | None, epoch_text: str | None, fixed: dict | None, auto: list[str]) -> str:
    parts = [f"{LABELS.get(y, y)}" + (f" against {x}" if x else "")]
    if epoch_text:
        parts.append(epoch_text)
    if fixed:
        parts.append(", ".join(f"{k} = {values_text(v if isinstance(v, list) else [v])}" for k, v in fixed.items()))
    if auto:
        parts.append(f"panels by {' and '.join(auto)} (chosen by the figure: the table varies in them)")
    return "; ".join(parts)


def draw_xy(df: pd.DataFrame, *, x: str, y: str = "w_err_norm", hue: str | None = None, style: str | None = None,
            col: str | None = None, row: str | None = None, epoch: int | None = None, fixed: dict | None = None,
            auto: Sequence[str] = (), band: str = "ci", title: str | None = None) -> plt.Figure:
    """|y| against x, faceted (:func:`study.plots.error_facets`), at one checkpoint unless epoch
    is on the figure: ``epoch`` or, by default, the last, named in the title. ``fixed``: the
    values the rows were selected on (``--where``), for the title; ``band``: as error_curve's;
    ``title``: in place of the one made of those (the line of what is held fixed stays)."""
    where = "parameter of draw_xy"
    placed = [x, hue, style, col, row]
    rows, epoch_text = at_epoch(df, epoch, placed=placed, where=where)
    if "epoch" in placed and epoch is None:
        epoch_text = None
    g = error_facets(rows, x=x, y=y, hue=hue, style=style, col=col, row=row, band=band,
                     title=title if title is not None else _title(y, x, epoch_text, fixed, list(auto)))
    return g.figure


def draw_figure(df: pd.DataFrame, name: str, *, y: str = "w_err_norm", hue: str | None = None,
                style: str | None = None, col: str | None = None, row: str | None = None, epoch: int | None = None,
                fixed: dict | None = None, band: str | None = None, title: str | None = None) -> plt.Figure:
    """One named figure from a results table: a generic one, or an exercise's (from its raw
    table, as the exercise draws it: hue, style, col, row, epoch and band are refused there).

    A generic figure sets x (``error-vs-num_train`` ...) and puts the axes that vary, and that
    the caller did not place, on hue, then col, then row, saying so in the title; more than
    that is refused (PoolingError) rather than pooled.
    """
    where = "parameter of draw_figure"
    if name not in figure_names():
        raise ParameterError("figure", where, f"one of {figure_names()}", name)
    t = open_table(df)
    if y not in t.columns:
        raise ParameterError("y", where, "a column of the table", y)
    roles = {"hue": hue, "style": style, "col": col, "row": row}
    if name not in GENERIC_FIGURES:
        for role, value in {**roles, "epoch": epoch, "band": band, "title": title}.items():
            if value is not None:
                raise ParameterError(role, where, f"left out with the exercise figure {name} (drawn as the exercise "
                                     f"draws it)", value)
        study = next(s for s in STUDIES.values() if name.startswith(s.name.split("_")[0] + "_"))
        figures = study.analyse(t).figures
        for other, fig in figures.items():
            if other != name:
                plt.close(fig)
        return figures[name]
    x = GENERIC_FIGURES[name]
    placed = ["lr", "epoch"] if x is None else [x]
    placed += [v for v in roles.values() if v]
    rows, epoch_text = at_epoch(t, epoch, placed=placed, where=where)
    free = [a for a in _AUTO_AXES if a in rows.varying(placed, axes_of(y))]
    auto = []
    for role in (("hue", "col", "row") if x is not None else ("col", "row")):
        if roles[role] is None and free:
            roles[role] = free.pop(0)
            if role != "hue":
                auto.append(roles[role])
    if free:
        raise PoolingError({a: rows.values(a) for a in free}, f"the figure {name}")
    if x is None:
        if hue or style:
            raise ParameterError("hue" if hue else "style", where, "left out with the heatmap (its cells are lr × "
                                 "epoch; use col and row)", hue or style)
        return heatmap_facets(rows, value=y, col=roles["col"], row=roles["row"],
                              title=title if title is not None else
                              _title(y, None, "every checkpoint but epoch 0", fixed, auto))
    return draw_xy(t, x=x, y=y, **roles, epoch=epoch, fixed=fixed, auto=auto, band=band or "ci", title=title)
