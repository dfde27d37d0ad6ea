"""The one vocabulary: the names of the grid's axes and settings, and the values a user may type.

These are the words of a Grid's fields, a TOML spec's keys, the CLI's flags and the results
table's columns. They live here, apart from the modules that give them meaning (data, model,
streams, engine, runner), so that checking a spec or answering ``study --help`` needs neither
torch nor pandas: the CLI answers at once.
"""

from __future__ import annotations

__all__: list[str] = []  # private: see study/__init__.py

#: The grid's axes (each a list of values), in the grid's order.
AXES = (
    "num_train",
    "num_inputs",
    "lr",
    "epoch",
    "loss",
    "sigma",
    "reduction",
    "lr_decay",
    "momentum",
    "weight_decay",
    "average_from",
    "batch_size",
    "drop_last",
    "noise",
    "noise_kind",
)
#: The optimiser's axes that came after the others, each with the value that is the plain SGD of
#: before: lr_t = lr·(1 + t)^−lr_decay after t steps (scikit-learn's ``invscaling``), heavy-ball
#: momentum and weight decay on the weight only as ``torch.optim.SGD`` applies them, and
#: ``average_from``, the epoch from which the reported ŵ, b̂ are the average of the iterates
#: after every step ("none": the last iterate). A run at these values has the key and the
#: numbers it had before the axes existed (stores stay valid), and a table without their
#: columns holds these values.
OPTIMIZER_DEFAULTS = {"lr_decay": 0.0, "momentum": 0.0, "weight_decay": 0.0, "average_from": None}
#: The axes added after the first ones, each with the value that reproduces the runs before it
#: (keys, numbers, and a table's column where a table lacks it): the optimiser's, and
#: ``drop_last``, whether each epoch drops its ragged last minibatch, as
#: ``torch.utils.data.DataLoader(drop_last=True)`` does (false, as d2l's loader).
LATER_DEFAULTS = {**OPTIMIZER_DEFAULTS, "drop_last": False}
#: Runs with at most this many features keep a column per feature in a table (w_hat_j, w_err_j);
#: runs with more keep the norms alone (w_err_norm, w_err_max), so that a table of d = 200 (d2l
#: §3.7) stays narrow.
PER_FEATURE_COLUMNS_UP_TO = 10
#: The axes that apply to some runs only: each with the axis and the values that make it apply,
#: and the value it is keyed at where it does not. Elsewhere it is *not applicable*: such a run
#: is trained once per stream (not once per value of the axis), keyed as at that value (so a
#: run a store holds from before the rule stays valid), its table rows hold a missing value
#: there, and pooling rules and figures ignore the axis where it does not apply. σ is the
#: Huber loss's threshold (eq. 3.5.1): a squared run is the same run whatever σ says.
APPLIES_ONLY = {"sigma": ("loss", ("huber",), 1.0)}
#: average_from's word for "never" (the last iterate), in a TOML spec and in a table's column.
NO_AVERAGE = "none"
#: The grid's settings (one value each).
SETTINGS = ("w", "b", "num_val", "replicates", "seed", "stream")
#: The axes that define a run (epoch is a checkpoint axis, not part of a run).
RUN_AXES = tuple(a for a in AXES if a != "epoch")
#: What a run's random stream depends on, besides the base seed and the replicate.
STREAM_KEYS = ("num_train", "num_val", "noise", "noise_kind", "batch_size")

#: ``squared`` is MSELoss (no 1/2); ``huber`` is equation (3.5.1), SmoothL1Loss(beta=sigma).
LOSSES = ("squared", "huber")
REDUCTIONS = ("mean", "sum")
#: See study.data.
NOISE_KINDS = ("gaussian", "student_t", "outliers")
#: See study.streams.
STREAMS = ("counter", "torch")
#: The string axes, each with its values in the order they are listed where no grid says
#: otherwise (average_from: "none", then the epochs in order).
CHOICES = {"loss": LOSSES, "reduction": REDUCTIONS, "noise_kind": NOISE_KINDS, "average_from": (NO_AVERAGE,)}
#: The axes of whole numbers, and of truth values; every other axis but CHOICES' is a real number.
INT_AXES = ("num_train", "num_inputs", "batch_size", "epoch")
BOOL_AXES = ("drop_last",)
#: The axes that change how a run trains on its data, never the data: runs that differ only in
#: them share their stream (common random numbers), so comparisons across them are paired.
OPTIMIZER_AXES = ("lr", "loss", "sigma", "reduction", *OPTIMIZER_DEFAULTS)
#: The axes least squares depends on: those that choose the data (STREAM_KEYS), and the number
#: of features (runs of one replicate at several share their seed, not their data).
DATA_AXES = tuple(a for a in AXES if a in STREAM_KEYS or a == "num_inputs")
#: See study.engine.
ENGINES = ("batched", "reference")
#: Each engine's arithmetic, numbered: bumped whenever a change moves a run's numbers (even by an
#: ulp), so that a store written before it is recomputed, not mixed with what follows it.
#: batched 2: the step size applied to the gradient's sums, fused multiply-adds, and a squared
#: run's training loss and gradient at a checkpoint from its data's second moments (float64).
#: batched 3: the steps on the runs-last layout, their sums as chains of fused multiply-adds and
#: a pairwise tree over the minibatch (not reduction kernels).
#: batched 4, reference 2: the checkpoints' sums and the least-squares fit's (study.sums) in a
#: fixed pairwise order too (on CUDA a reduction kernel's order moved with the chunk's size), and
#: the fit's pinv on the CPU.
#: batched 5: a run of constant lr, no momentum and no weight decay steps with plain SGD's
#: arithmetic in a chunk that holds runs of the optimiser's axes too (before, with their
#: arithmetic: another rounding where the step size is not a power of two, so its bits depended
#: on its chunk); the residuals of runs of more than engine.CHAIN_FEATURES features by a tree.
ENGINE_REVISIONS = {"batched": 5, "reference": 2}
#: joblib's backends that hand chunks back as they finish (so that each is saved at once; its
#: "multiprocessing" backend cannot), and Dask; "auto" picks threads or loky (study.dispatch.local_backend).
BACKENDS = ("auto", "loky", "threading", "sequential", "dask")
#: Seconds one attempt of a chunk may take on a Dask cluster before it is given up. A chunk
#: under the memory budget takes seconds to minutes; an hour leaves room for the reference
#: engine and slow workers, and still ends a run whose workers hang or are gone.
DEFAULT_CHUNK_TIMEOUT = 3600.0
#: The formats a figure is written in, by its file's extension (see study.plots.save_figure).
FIGURE_FORMATS = (".png", ".svg", ".pdf")


def average_text(value: float | None) -> str:
    """average_from as a table holds it: "none", or the epoch as text ("0", "2"): a column of one
    type, whose values sort as :data:`NO_AVERAGE` first, then by epoch."""
    return NO_AVERAGE if value is None else str(int(value))
