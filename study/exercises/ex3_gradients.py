"""Exercise 3: where PyTorch keeps the gradient, and how it shrinks as training converges."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..analysis import Table, open_table
from ..data import SyntheticRegressionData
from ..model import LinearRegression
from ..plots import (
    error_curve,
    merged_legend,
)
from ..summaries import median_ranks
from ..train import Trainer
from .common import (
    Outcome,
    _at,
    _estimate,
    _one,
    _precision_text,
    _ratio,
)


def gradient_access(seed: int = 0, epochs: int = 3) -> pd.DataFrame:
    """The seed's example once more, reading the gradient where PyTorch keeps it."""
    model = LinearRegression(lr=0.03)
    data = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2, seed=seed)
    trainer = Trainer(max_epochs=epochs).fit(model, data)
    last_batch = data.num_train - (data.num_train - 1) // data.batch_size * data.batch_size
    # fit's last minibatch left its gradients in .grad
    assert model.net.weight.grad is not None and model.net.bias.grad is not None
    grad_w = model.net.weight.grad.reshape(-1)
    full = trainer.history[-1]
    return pd.DataFrame(
        {
            "quantity": ["model.net.weight.grad (last minibatch)", "full-batch gradient at the end"],
            "examples": [last_batch, data.num_train],
            "batch_size": [data.batch_size, data.batch_size],
            "grad_w_0": [float(grad_w[0]), float(full.grad_w[0])],
            "grad_w_1": [float(grad_w[1]), float(full.grad_w[1])],
            "grad_b": [float(model.net.bias.grad), full.grad_b],
        }
    )


def _medians_with_intervals(t: Table, keys: list[str], columns: dict[str, str]) -> pd.DataFrame:
    """Per cell, the median of each |column| over the runs that did not diverge, with its 95%
    interval: ``{name}_median``, ``_median_lo``, ``_median_hi`` (``columns`` maps each column to
    its name in the table, e.g. grad_b to grad_b_abs)."""
    table = None
    for column, name in columns.items():
        points, _ = t.point_stats(keys, column, ranks=lambda n: median_ranks(n, 0.95))
        part = points[keys].assign(
            **{
                f"{name}_median": points["median"],
                f"{name}_median_lo": points["ci_lo"],
                f"{name}_median_hi": points["ci_hi"],
            }
        )
        table = part if table is None else table.merge(part, on=keys, how="outer")
    return table


def ex3_gradients(df: Any) -> Outcome:
    t = open_table(df)
    table = _medians_with_intervals(
        t, ["lr", "epoch"], {"grad_w_norm": "grad_w_norm", "grad_b": "grad_b_abs", "w_err_norm": "w_err_norm"}
    )
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
    g = {lr: _estimate(_at(t, lr=lr, epoch=last), "grad_w_norm") for lr in lrs}
    change = {lr: _ratio(_at(t, lr=lr, epoch=last), _at(t, lr=lr, epoch=earlier), "grad_w_norm") for lr in lrs}
    g0 = _estimate(_at(t, epoch=0), "grad_w_norm", per_stream=True)  # the start: one per data set, whatever the lr
    falling = [lr for lr in lrs if change[lr].high < 1]
    flat = [lr for lr in lrs if not change[lr].clear()]
    rising = [lr for lr in lrs if change[lr].low > 1]

    def listed(chosen):
        return ", ".join(f"{lr:g}" for lr in chosen)

    # Where it has stopped, the level against the lr: each lr's gradient over the next smaller
    # one's, on the same data sets (the lr does not change the data).
    steps = [
        (a, b, _ratio(_at(t, lr=b, epoch=last), _at(t, lr=a, epoch=last), "grad_w_norm"))
        for a, b in zip(flat, flat[1:])
    ]
    grows = ""
    if steps:
        pairs = "; ".join(f"lr {b:g} over {a:g}: {r.factor()}" for a, b, r in steps)
        grows = (
            f", a noise that grows with the lr ({pairs})"
            if all(r.low > 1 for _, _, r in steps)
            else f"; its level does not clearly grow with every step of the lr ({pairs})"
        )
    reading = "; ".join(
        filter(
            None,
            [
                f"at lr {listed(falling)} it is still falling: SGD is still descending" if falling else "",
                f"at lr {listed(flat)} it changed by no clear factor: SGD has stopped at the noise of its minibatches{grows}"
                if flat
                else "",
                f"at lr {listed(rising)} it rose" if rising else "",
            ],
        )
    )
    n, bs, ragged = int(access["examples"][1]), int(access["batch_size"][0]), int(access["examples"][0])
    answer = (
        "PyTorch keeps a parameter's gradient on the parameter: `model.net.weight.grad` and "
        "`model.net.bias.grad` (the seed's `get_w_b` reads `.data`, its gradient is `.grad`). After `fit` "
        f"they hold the gradient of the *last minibatch* only, here of {ragged} examples "
        f"({n} = {(n - ragged) // bs}·{bs} + {ragged}): ‖grad‖ = "
        f"{np.hypot(access['grad_w_0'][0], access['grad_w_1'][0]):.2g}, while the full-batch gradient at the same "
        f"point is {np.hypot(access['grad_w_0'][1], access['grad_w_1'][1]):.2g} (one run, the seed's); the full-batch "
        "gradient needs a pass of its own (`torch.autograd.grad`, as the checkpoints here do, so `.grad` is left as SGD "
        f"left it). From {g0} at the start, after {last} epochs the median full-batch ‖∇_w L‖ was "
        + "; ".join(f"{g[lr]} at lr {lr:g}" for lr in lrs)
        + f". Each run's gradient at epoch {last} over its own at epoch {earlier}: "
        + "; ".join(f"lr {lr:g}: {change[lr].factor()}" for lr in lrs)
        + f". So {reading}. "
        + _precision_text(t)
    )
    return Outcome({"ex3_gradients": table, "ex3_grad_access": access}, {"ex3_gradients": fig}, answer)
