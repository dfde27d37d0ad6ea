"""The exercises of d2l §3.5 as studies: a grid, tables, figures and a short answer each.

Each study reads its grid from ``experiments/<name>.toml``, runs it with :func:`run_grid`
(the raw table goes to ``results/raw/<name>.csv``, git-ignored), and writes its summary tables
to ``results/``, its figures to ``figures/`` (PNG and SVG), and its answer, with the numbers
measured, to ``results/answers.md``. ``quick=True`` shrinks every grid (fewer replicates,
sizes and epochs) for a preview in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .data import SyntheticRegressionData
from .grid import Grid, load_grid, log_sizes
from .model import LinearRegression
from .plots import LABELS, PALETTE, error_curve, loss_shapes, lr_epoch_heatmap, save_figure
from .results import SUMMARY_DIGITS, fit_power_law, summarize, write_csv
from .runner import run_grid
from .train import Trainer

__all__ = ["STUDIES", "Outcome", "run_exercises", "seed_example", "EXPERIMENTS"]

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def seed_example(lr: float = 0.03, loss: str = "squared", epochs: int = 3, num_train: int = 1000, seed: int = 0) -> dict:
    """The section's own example (``study demo``): w = [2, -3.4], b = 4.2, trained by the
    reference loop, and its errors as the book prints them (w − ŵ, b − b̂), beside least
    squares on the same data."""
    from .theory import least_squares

    model = LinearRegression(lr=lr, loss=loss)
    data = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2, num_train=num_train, seed=seed)
    Trainer(max_epochs=epochs).fit(model, data)
    w, b = model.get_w_b()
    w_ols, b_ols = least_squares(data.X_train, data.y_train)
    return {"w": data.w - w.reshape(data.w.shape), "b": data.b - b, "ols_w": (data.w.double() - w_ols).numpy(),
            "ols_b": data.b - float(b_ols)}


@dataclass
class Outcome:
    """What a study produced: tables and figures by file stem, and its answer in markdown."""

    tables: dict[str, pd.DataFrame]
    figures: dict[str, plt.Figure]
    answer: str


def _at(df: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for column, value in where.items():
        mask &= (df[column] == value).to_numpy()
    return df[mask]


def _median(df: pd.DataFrame, column: str) -> float:
    ok = df[~df["diverged"].astype(bool)]
    return float(ok[column].abs().median())


# --- 1. mean vs sum ------------------------------------------------------------------------

def ex1_reduction(df: pd.DataFrame) -> Outcome:
    epoch = 3 if 3 in set(df["epoch"]) else int(df["epoch"].max())
    at = df[df["epoch"] == epoch]
    bs = int(at["batch_size"].iloc[0])
    n = int(at["num_train"].iloc[0])
    table = summarize(at, by=["reduction", "lr"])
    rows = []
    for reduction, cells in table.groupby("reduction"):
        stable = cells[cells["diverged"] == 0]
        diverging = cells[cells["diverged"] > cells["count"] / 2]
        best = stable.loc[stable["w_err_norm_median"].idxmin()]
        rows.append({"reduction": reduction, "epoch": epoch, "best_lr": best["lr"],
                     "best_w_err_norm_median": best["w_err_norm_median"],
                     "largest_stable_lr": stable["lr"].max(),
                     "smallest_diverging_lr": diverging["lr"].min() if len(diverging) else np.nan})
    best = pd.DataFrame(rows)
    b = best.set_index("reduction")
    ratio = b.loc["mean", "best_lr"] / b.loc["sum", "best_lr"]
    ratio_div = b.loc["mean", "smallest_diverging_lr"] / b.loc["sum", "smallest_diverging_lr"]

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    error_curve(at, x="lr", y="w_err_norm", hue="reduction", ax=axes[0], legend_title="reduction")
    axes[0].set_title(f"after {epoch} epochs (num_train={n}, batch_size={bs})")
    scaled = at.assign(step=np.where(at["reduction"] == "sum", at["lr"] * bs, at["lr"]))
    error_curve(scaled, x="step", y="w_err_norm", hue="reduction", ax=axes[1], legend_title="reduction")
    axes[1].set_xlabel(f"lr × {bs} for sum, lr for mean (step per example)")
    axes[1].set_title("rescaled by the batch size, the curves coincide")
    for ax in axes:
        ax.axhline(_median(at, "ols_w_err_norm"), color="0.35", linestyle="--", linewidth=1)
        ax.text(ax.get_xlim()[0], _median(at, "ols_w_err_norm") * 1.15, " least squares", fontsize="x-small", color="0.35")
    fig.suptitle("Exercise 1: the loss summed over the minibatch needs a learning rate batch_size times smaller")
    ragged = n % bs
    answer = (
        f"Summing instead of averaging multiplies the gradient of a full minibatch by its size B = {bs}, so the "
        f"learning rate must be divided by B to take the same steps. Measured after {epoch} epochs on {n} "
        f"examples: the best lr was {b.loc['mean', 'best_lr']:.3g} with `mean` and {b.loc['sum', 'best_lr']:.3g} "
        f"with `sum` (ratio {ratio:.0f}), and runs diverged from lr {b.loc['mean', 'smallest_diverging_lr']:.3g} "
        f"and {b.loc['sum', 'smallest_diverging_lr']:.3g} (ratio {ratio_div:.0f}); the grid's lrs are "
        f"10^(1/4) ≈ 1.8 apart, so the ratios are B to within that step. Rescaled, the two curves lie on top "
        f"of each other except for the ragged last minibatch: {n} = {n // bs}·{bs} + {ragged}, and with `sum` "
        f"that last step is {ragged}/{bs} as large as with `mean`, which weights its {ragged} examples as much "
        f"as a full batch. So lr_sum = lr_mean / B exactly when B divides num_train, and nearly so otherwise."
    )
    return Outcome({"ex1_reduction": table, "ex1_best_lr": best}, {"ex1_reduction": fig}, answer)


# --- 2. squared vs Huber -------------------------------------------------------------------

def _loss_label(df: pd.DataFrame) -> pd.DataFrame:
    """One label per loss: squared ignores sigma, so its runs at other sigmas (identical by
    common random numbers) are dropped."""
    first = df["sigma"].min()
    df = df[(df["loss"] == "huber") | (df["sigma"] == first)]
    label = np.where(df["loss"] == "squared", "squared", "Huber σ=" + df["sigma"].map("{:g}".format))
    return df.assign(loss_sigma=label)


def ex2_huber(df: pd.DataFrame) -> Outcome:
    df = _loss_label(df)
    last = int(df["epoch"].max())
    mid = 1000 if 1000 in set(df["num_train"]) else int(df["num_train"].median())
    table = summarize(df, by=["noise_kind", "loss_sigma", "num_train", "epoch"])
    sigmas = sorted(df.loc[df["loss"] == "huber", "sigma"].unique())

    fig_shapes, _ = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_shapes(sigmas, axes=fig_shapes.axes)
    fig_shapes.suptitle("Squared loss and Huber's loss (3.5.1): Huber's derivative is bounded by 1")

    fig, axes = plt.subplots(2, 2, figsize=(14, 8.5), sharey="row")
    order = ["squared", *[f"Huber σ={s:g}" for s in sigmas]]
    names = {"gaussian": "Gaussian noise", "outliers": "10% gross outliers", "student_t": "Student-t noise"}
    for col, kind in enumerate(["gaussian", "outliers"]):
        sub = df[df["noise_kind"] == kind]
        legend = "outside" if col == 1 else False
        error_curve(_at(sub, num_train=mid)[lambda d: d["epoch"] > 0], x="epoch", y="w_err_norm", hue="loss_sigma",
                    hue_order=order, floor="ols_w_err_norm", ax=axes[0, col], legend_title="loss", legend=legend)
        axes[0, col].set_title(f"{names[kind]}: error against epoch (num_train={mid}, lr={sub['lr'].iloc[0]:g})")
        error_curve(_at(sub, epoch=last), x="num_train", y="w_err_norm", hue="loss_sigma", hue_order=order,
                    floor="ols_w_err_norm", ax=axes[1, col], legend_title="loss", legend=legend)
        axes[1, col].set_title(f"{names[kind]}: error against data after {last} epochs")
    fig.suptitle("Exercise 2: Huber's loss is slow from a far start but ignores gross outliers")
    fig.tight_layout()

    def med(kind, label, epoch, n=mid):
        return _median(_at(df, noise_kind=kind, loss_sigma=label, epoch=epoch, num_train=n), "w_err_norm")

    huber = [f"Huber σ={s:g}" for s in sigmas]
    best_out = min(huber, key=lambda h: med("outliers", h, last))
    early = 3 if 3 in set(df["epoch"]) else int(sorted(df["epoch"].unique())[1])
    ols_out = _median(_at(df, noise_kind="outliers", epoch=last, num_train=mid), "ols_w_err_norm")
    answer = (
        f"Huber's loss (3.5.1) is `nn.SmoothL1Loss(beta=σ)`; its derivative is clipped at ±1, so far from the "
        f"solution each example pulls with a bounded force. That is its cost: from the start at lr "
        f"{df['lr'].iloc[0]:g}, after {early} epochs on {mid} examples with Gaussian noise the median ‖ŵ − w‖ was "
        f"{med('gaussian', 'squared', early):.2g} with the squared loss and {med('gaussian', huber[0], early):.2g} "
        f"with {huber[0]} ({med('gaussian', huber[-1], early):.2g} with {huber[-1]}), which is why Huber looks "
        f"worse after the seed's 3 epochs. Once trained ({last} epochs) the two agree under Gaussian noise "
        f"({med('gaussian', 'squared', last):.2g} vs {med('gaussian', huber[0], last):.2g}). With 10% gross "
        f"outliers Huber wins: {med('outliers', best_out, last):.2g} with {best_out} against "
        f"{med('outliers', 'squared', last):.2g} for the squared loss, whose floor is least squares "
        f"({ols_out:.2g}), itself dragged by the outliers."
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
        "grad_w_0": [float(grad_w[0]), float(full.grad_w[0])],
        "grad_w_1": [float(grad_w[1]), float(full.grad_w[1])],
        "grad_b": [float(model.net.bias.grad), full.grad_b],
    })


def ex3_gradients(df: pd.DataFrame) -> Outcome:
    ok = df[~df["diverged"].astype(bool)]
    table = ok.assign(grad_b_abs=ok["grad_b"].abs()).groupby(["lr", "epoch"])[["grad_w_norm", "grad_b_abs", "w_err_norm"]]
    table = table.median().add_suffix("_median").reset_index()
    access = gradient_access()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    error_curve(df, x="epoch", y="grad_w_norm", hue="lr", ax=axes[0], logx=False, legend_title="lr", legend=False)
    error_curve(df, x="epoch", y="grad_b", hue="lr", ax=axes[1], logx=False, legend_title="lr", legend="outside")
    axes[0].set_title("full-batch gradient of the training loss, weights")
    axes[1].set_title("full-batch gradient of the training loss, bias")
    fig.suptitle("Exercise 3: the gradient shrinks geometrically, then stalls at a level set by the learning rate")
    fig.tight_layout()

    last = int(df["epoch"].max())
    lrs = sorted(df["lr"].unique())
    g = {lr: _median(_at(df, lr=lr, epoch=last), "grad_w_norm") for lr in lrs}
    g0 = _median(_at(df, epoch=0), "grad_w_norm")
    answer = (
        "PyTorch keeps a parameter's gradient on the parameter: `model.net.weight.grad` and "
        "`model.net.bias.grad` (the seed's `get_w_b` reads `.data`, its gradient is `.grad`). After `fit` "
        "they hold the gradient of the *last minibatch* only, here of "
        f"{int(access['examples'][0])} examples (1000 = 31·32 + 8): ‖grad‖ = "
        f"{np.hypot(access['grad_w_0'][0], access['grad_w_1'][0]):.2g}, while the full-batch gradient at the same "
        f"point is {np.hypot(access['grad_w_0'][1], access['grad_w_1'][1]):.2g}; the full-batch gradient needs a pass "
        "of its own (`torch.autograd.grad`, as the checkpoints here do, so `.grad` is left as SGD left it). "
        f"From {g0:.2g} at the start, after {last} epochs the median full-batch ‖∇_w L‖ was "
        + ", ".join(f"{g[lr]:.1g} at lr {lr:g}" for lr in lrs)
        + ": small learning rates are still descending, large ones have stopped at a noise floor that grows with lr."
    )
    return Outcome({"ex3_gradients": table, "ex3_grad_access": access}, {"ex3_gradients": fig}, answer)


# --- 4. learning rate x epochs -------------------------------------------------------------

def ex4_lr_epochs(df: pd.DataFrame) -> Outcome:
    table = summarize(df, by=["lr", "epoch"])
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [1.1, 1]})
    lr_epoch_heatmap(df, ax=axes[0])
    axes[0].set_title("median ‖ŵ − w‖ (grey: most runs diverged)")
    error_curve(df[df["epoch"] > 0], x="epoch", y="w_err_norm", hue="lr", floor="ols_w_err_norm", ax=axes[1],
                legend_title="lr", legend="outside")
    axes[1].set_title("error against epoch, with the least-squares floor")
    fig.suptitle("Exercise 4: more epochs help until a floor set by the data and, for SGD, by the learning rate")
    fig.tight_layout()

    last = int(df["epoch"].max())
    stable = table[(table["epoch"] == last) & (table["diverged"] == 0)]
    best = stable.loc[stable["w_err_norm_median"].idxmin()]
    diverging = table[(table["epoch"] == last) & (table["diverged"] > table["count"] / 2)]["lr"]
    floor = _median(_at(df, epoch=last), "ols_w_err_norm")
    small = min(df["lr"])
    e = sorted(set(df["epoch"]) - {0})
    slow = [_median(_at(df, lr=small, epoch=ep), "w_err_norm") for ep in (e[0], e[len(e) // 2], last)]
    big = max(stable["lr"])
    answer = (
        f"Error falls with epochs at a rate set by the learning rate: at lr {small:g} the median ‖ŵ − w‖ went "
        f"{slow[0]:.2g} → {slow[1]:.2g} → {slow[2]:.2g} after {e[0]}, {e[len(e) // 2]} and {last} epochs. It does "
        f"not keep improving: it stops at a floor. The data set one floor, least squares on the same examples "
        f"({floor:.2g}); SGD with a constant lr reaches it only when the lr is small enough (after {last} epochs "
        f"lr {best['lr']:g} was at {best['w_err_norm_median']:.2g}) and otherwise stalls above it at a level that "
        f"grows with the lr, the noise of the last minibatches (lr {big:g}: "
        f"{_median(_at(df, lr=big, epoch=last), 'w_err_norm'):.2g}). "
        + (f"From lr {diverging.min():g} up, training diverged." if len(diverging) else "No lr in the grid diverged.")
    )
    return Outcome({"ex4_lr_epochs": table}, {"ex4_lr_epochs": fig}, answer)


# --- 5. amount of data ---------------------------------------------------------------------

def ex5_data_size(df: pd.DataFrame) -> Outcome:
    last = int(df["epoch"].max())
    table = summarize(df, by=["num_train", "lr", "loss", "epoch"])
    lr = 0.03 if 0.03 in set(df["lr"]) else sorted(df["lr"].unique())[len(df["lr"].unique()) // 2]
    final = _at(df, epoch=last)
    seed_like = _at(final, loss="squared", lr=lr)
    sizes = sorted(df["num_train"].unique())
    big = 1000 if 1000 in sizes[:-1] else sizes[len(sizes) // 2]  # SGD's slope: where the optimisation gap has closed

    slopes = []
    ols = fit_power_law(seed_like["num_train"], seed_like["ols_w_err_norm"])
    slopes.append({"quantity": "ols_w_err_norm", "fit_from": min(sizes), **ols.__dict__})
    ols_b = fit_power_law(seed_like["num_train"], seed_like["ols_b_err"].abs())
    slopes.append({"quantity": "ols_b_err_abs", "fit_from": min(sizes), **ols_b.__dict__})
    for rate in sorted(df["lr"].unique()):
        part = _at(final, loss="squared", lr=rate)
        part = part[(part["num_train"] >= big) & ~part["diverged"]]
        fit = fit_power_law(part["num_train"], part["w_err_norm"])
        slopes.append({"quantity": f"w_err_norm (SGD, squared, lr={rate:g}, epoch {last})", "fit_from": big, **fit.__dict__})
    slopes = pd.DataFrame(slopes)

    fig, axes = plt.subplots(2, 2, figsize=(13, 10))
    error_curve(_at(final, loss="squared"), x="num_train", y="w_err_norm", hue="lr", floor="ols_w_err_norm",
                fit_from=big, ax=axes[0, 0], legend="lower left",
                legend_title=f"lr (squared loss, epoch {last}); SGD slopes for n ≥ {big}")
    axes[0, 0].set_title("‖ŵ − w‖ against the amount of data")
    parts = pd.concat([seed_like.assign(quantity=LABELS[c], value=seed_like[c].abs())
                       for c in ("w_err_0", "w_err_1", "b_err")])
    error_curve(parts, x="num_train", y="value", hue="quantity", ax=axes[0, 1], ylabel="absolute error",
                legend_title=f"component (lr {lr:g}, squared, epoch {last})", legend="lower left")
    axes[0, 1].set_title("each component of w, and b")
    split = pd.concat([
        seed_like.assign(part="total ‖ŵ − w‖", value=seed_like["w_err_norm"]),
        seed_like.assign(part="optimisation gap ‖ŵ − ŵ_ols‖", value=seed_like["gap_w_norm"]),
        seed_like.assign(part="statistical error ‖ŵ_ols − w‖", value=seed_like["ols_w_err_norm"], diverged=False),
    ])
    error_curve(split, x="num_train", y="value", hue="part", ax=axes[1, 0], ylabel="‖·‖₂", legend="lower left",
                hue_order=["total ‖ŵ − w‖", "optimisation gap ‖ŵ − ŵ_ols‖", "statistical error ‖ŵ_ols − w‖"],
                legend_title=f"lr {lr:g}, squared, epoch {last}")
    axes[1, 0].set_title("the error split: optimisation gap and statistical error")
    _log_spacing_panel(seed_like, sizes, axes[1, 1])
    fig.suptitle("Exercise 5: estimation error against the amount of data (log-spaced sizes, 1-2-5)")
    fig.tight_layout()

    def med(n, column, frame=seed_like):
        return _median(frame[frame["num_train"] == n], column)

    small = sizes[0]
    sgd_fit = slopes[slopes["quantity"].str.contains(f"lr={lr:g},")].iloc[0]
    answer = (
        f"Least squares on the same data falls as n^{ols.slope:.2f} (95% interval [{ols.low:.2f}, {ols.high:.2f}]; "
        f"theory −1/2) for w and n^{ols_b.slope:.2f} for b: four times the data halves the error. SGD for a fixed "
        f"{last} epochs gains twice from more data, more information and more steps: at lr {lr:g} its median "
        f"‖ŵ − w‖ went from {med(small, 'w_err_norm'):.2g} at n = {small} (only {last * -(-small // 32)} steps, "
        f"optimisation gap {med(small, 'gap_w_norm'):.2g}) to {med(sizes[-1], 'w_err_norm'):.2g} at n = {sizes[-1]} "
        f"(gap {med(sizes[-1], 'gap_w_norm'):.2g}, least squares {med(sizes[-1], 'ols_w_err_norm'):.2g}); above "
        f"n = {big} it falls as n^{sgd_fit['slope']:.2f}. Log spacing is right because the error is a power law: "
        f"equal ratios of n give equal steps on a log-log plot, so 11 sizes from 5 to 10,000 cover 3.3 decades, "
        f"while 1,000, 2,000, …, 10,000 spend the same 11 runs within one decade, where the curve is already "
        f"flat, and never see the small-data regime where it changes most."
    )
    return Outcome({"ex5_data_size": table, "ex5_slopes": slopes}, {"ex5_data_size": fig}, answer)


def _log_spacing_panel(seed_like: pd.DataFrame, sizes: list[int], ax: plt.Axes) -> None:
    """Why the hint's log spacing serves: the same budget of sizes, spread two ways."""
    curve = seed_like.groupby("num_train")["ols_w_err_norm"].median()
    ax.plot(curve.index, curve.values, color="0.35", linestyle="--", label="least squares, median")
    logs = np.array(sizes)
    linear = np.linspace(sizes[-1] / len(sizes), sizes[-1], len(sizes)).round().astype(int)
    y_log = np.interp(np.log(logs), np.log(curve.index), np.log(curve.values))
    y_lin = np.interp(np.log(linear), np.log(curve.index), np.log(curve.values))
    colors = sns.color_palette(PALETTE, 2)
    ax.plot(logs, np.exp(y_log), "o", color=colors[0], markersize=7,
            label=f"{len(logs)} log-spaced sizes: {logs[0]}, {logs[1]}, {logs[2]}, …, {logs[-1]}")
    ax.plot(linear, np.exp(y_lin), "s", color=colors[1], markerfacecolor="none", markersize=10, markeredgewidth=1.5,
            label=f"{len(linear)} linear sizes: {linear[0]}, {linear[1]}, …, {linear[-1]}")
    ax.set(xscale="log", yscale="log", xlabel=LABELS["num_train"], ylabel="least squares ‖ŵ_ols − w‖₂")
    ax.set_title("why log spacing: the same 11 sizes, spread two ways")
    ax.legend(fontsize="small", loc="upper right")


# --- running them --------------------------------------------------------------------------

@dataclass(frozen=True)
class Study:
    number: int
    name: str
    analyse: Callable[[pd.DataFrame], Outcome]
    quick: dict  # overrides of the grid for --quick


STUDIES = {
    1: Study(1, "ex1_reduction", ex1_reduction, {"replicates": 3}),
    2: Study(2, "ex2_huber", ex2_huber, {"replicates": 3, "num_train": [50, 200, 1000], "epoch": [1, 3, 10, 20]}),
    3: Study(3, "ex3_gradients", ex3_gradients, {"replicates": 3, "epoch": list(range(1, 11))}),
    4: Study(4, "ex4_lr_epochs", ex4_lr_epochs, {"replicates": 3, "epoch": [1, 3, 10, 30]}),
    5: Study(5, "ex5_data_size", ex5_data_size, {"replicates": 6, "num_train": log_sizes(5, 2000), "epoch": [1, 10]}),
}


def study_grid(study: Study, quick: bool = False) -> Grid:
    grid = load_grid(EXPERIMENTS / f"{study.name}.toml")
    if quick:
        grid = Grid(**{**grid.to_dict(), **study.quick})
    return grid


def run_exercises(numbers=None, *, quick: bool = False, out_dir: str | Path = ".", n_jobs: int = -1,
                  progress: bool = True, log: Callable[[str], None] = print) -> dict[int, Outcome]:
    """Run the studies (all five by default) and write their tables, figures and answers.

    Returns
    -------
    dict
        Exercise number -> :class:`Outcome`.
    """
    out_dir = Path(out_dir)
    numbers = sorted(STUDIES) if numbers is None else list(numbers)
    unknown = [n for n in numbers if n not in STUDIES]
    if unknown:
        raise ValueError(f"The 'numbers' parameter of run_exercises must be among {sorted(STUDIES)}. Got {unknown} instead.")
    grids = {n: study_grid(STUDIES[n], quick) for n in numbers}  # every spec checked before any work
    outcomes = {}
    for n in numbers:
        study, started = STUDIES[n], time.perf_counter()
        raw = out_dir / "results" / "raw" / f"{study.name}.csv"
        df = run_grid(grids[n], out=raw, n_jobs=n_jobs, progress=progress)
        outcome = study.analyse(df)
        for name, table in outcome.tables.items():
            write_csv(table, out_dir / "results" / f"{name}.csv", significant=SUMMARY_DIGITS)
        for name, fig in outcome.figures.items():
            save_figure(fig, out_dir / "figures" / f"{name}.png")
        outcomes[n] = outcome
        log(f"exercise {n}: {len(df) // len(grids[n].checkpoints)} runs, {time.perf_counter() - started:.1f} s: "
            + ", ".join([f"results/{t}.csv" for t in outcome.tables] + [f"figures/{f}.png" for f in outcome.figures]))
    answers = "\n\n".join(f"**Exercise {n}.** {outcomes[n].answer}" for n in sorted(outcomes))
    (out_dir / "results").mkdir(parents=True, exist_ok=True)
    (out_dir / "results" / "answers.md").write_text(answers + "\n", encoding="utf-8")
    return outcomes


# --- figures of any results table (study plot) ---------------------------------------------

#: Figures `study plot` draws from any results table: the error against one axis.
GENERIC_FIGURES = {"error-vs-num_train": "num_train", "error-vs-epoch": "epoch", "error-vs-lr": "lr",
                   "heatmap": None}
_FLOORS = {"w_err_norm": "ols_w_err_norm", "b_err": "ols_b_err"}
#: The axes a generic figure may colour by, in the order a default hue is picked.
_HUE_AXES = ("lr", "loss", "num_train", "reduction", "sigma", "noise_kind", "noise", "batch_size")


def figure_names() -> list[str]:
    """What ``study plot --figure`` accepts: the generic figures and every exercise's figures."""
    exercise = ["ex1_reduction", "ex2_huber_losses", "ex2_huber", "ex3_gradients", "ex4_lr_epochs", "ex5_data_size"]
    return [*GENERIC_FIGURES, *exercise]


def draw_figure(df: pd.DataFrame, name: str, *, y: str = "w_err_norm", hue: str | None = None) -> plt.Figure:
    """One figure from a results table: a generic one, or an exercise's (from its raw table)."""
    if name not in figure_names():
        raise ValueError(f"The 'figure' parameter of draw_figure must be one of {figure_names()}. Got {name!r} instead.")
    if y not in df.columns:
        raise ValueError(f"The 'y' parameter of draw_figure must be a column of the table. Got {y!r} instead.")
    if name not in GENERIC_FIGURES:
        study = next(s for s in STUDIES.values() if name.startswith(s.name.split("_")[0] + "_"))
        figures = study.analyse(df).figures
        for other, fig in figures.items():
            if other != name:
                plt.close(fig)
        return figures[name]
    fig, ax = plt.subplots(figsize=(8, 5))
    if name == "heatmap":
        lr_epoch_heatmap(df, value=y, ax=ax)
        return fig
    x = GENERIC_FIGURES[name]
    data = df[df["epoch"] > 0] if x == "epoch" else df[df["epoch"] == df["epoch"].max()]
    if hue is None:
        varying = [a for a in _HUE_AXES if a != x and df[a].nunique() > 1]
        hue = varying[0] if varying else None
    error_curve(data, x=x, y=y, hue=hue, floor=_FLOORS.get(y), ax=ax, legend="outside")
    pooled = [a for a in _HUE_AXES if a not in (x, hue) and data[a].nunique() > 1]
    title = [] if x == "epoch" else [f"after {int(data['epoch'].max())} epochs"]
    title += [f"pooled over {', '.join(pooled)}"] if pooled else []
    ax.set_title("; ".join(title))
    return fig
