"""Tests of study.grid: log_sizes, Grid, Run identities and seeds, TOML loading."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from study.grid import Grid, Run, load_grid, log_sizes
from study.vocabulary import AXES, SETTINGS

INT64_MAX = 2**63 - 1


def _write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _first_run(**settings) -> Run:
    return Grid(**settings).runs()[0]


# log_sizes ----------------------------------------------------------------------------------


def test_log_sizes_gives_the_1_2_5_sequence():
    assert log_sizes(5, 10_000) == [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


def test_log_sizes_single_value():
    assert log_sizes(1, 1) == [1]


def test_log_sizes_stop_between_steps_is_not_exceeded():
    assert log_sizes(3, 40) == [5, 10, 20]


def test_log_sizes_start_zero_raises():
    with pytest.raises(
        ValueError, match=re.escape("The 'start' parameter of log_sizes must be an integer >= 1. Got 0 instead.")
    ):
        log_sizes(0, 10)


def test_log_sizes_stop_below_start_raises():
    with pytest.raises(ValueError, match=r"'stop' parameter of log_sizes.*integer >= 10\. Got 5 instead"):
        log_sizes(10, 5)


def test_log_sizes_float_start_raises():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "The 'start' parameter of log_sizes must be an integer >= 1 (a float only if whole and at most 2**53). "
            "Got 2.5 instead."
        ),
    ):
        log_sizes(2.5, 10)


def test_log_sizes_takes_whole_floats():
    assert log_sizes(5.0, 1e4) == log_sizes(5, 10_000)
    assert all(type(n) is int for n in log_sizes(5.0, 1e4))


@pytest.mark.parametrize(
    ("per_decade", "expected"),
    [
        (1, [1, 10, 100, 1000]),
        (2, [1, 3, 10, 30, 100, 300, 1000]),
        (3, [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]),
        # 10**(k/4) to 3 significant digits (1, 1.78, 3.16, 5.62), rounded to integers
        (4, [1, 2, 3, 6, 10, 18, 32, 56, 100, 178, 316, 562, 1000]),
    ],
)
def test_log_sizes_per_decade(per_decade, expected):
    assert log_sizes(1, 1000, per_decade) == expected


def test_log_sizes_per_decade_rounding_to_integers_keeps_no_repeats():
    # 10 a decade: 1, 1.26, 1.58, 2.00, 2.51, ... give 1, 1, 2, 2, 3, ...: each integer once.
    assert log_sizes(1, 20, per_decade=10) == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20]


@pytest.mark.parametrize("per_decade", [0, 101, 2.5, True, "3"])
def test_log_sizes_bad_per_decade_raises(per_decade):
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"The 'per_decade' parameter of log_sizes must be an integer from 1 to 100. Got {per_decade!r} instead."
        ),
    ):
        log_sizes(1, 10, per_decade)


def test_log_sizes_bool_stop_raises():
    with pytest.raises(ValueError, match=r"'stop'.*Got True instead"):
        log_sizes(1, True)


# Grid -----------------------------------------------------------------------------------------


def test_grid_defaults_are_the_seed_example():
    grid = Grid()
    assert grid.num_train == [1000]
    assert grid.lr == [0.03]
    assert grid.epoch == [3]
    assert grid.loss == ["squared"]
    assert grid.sigma == [1.0]
    assert grid.reduction == ["mean"]
    assert grid.batch_size == [32]
    assert grid.noise == [0.01]
    assert grid.noise_kind == ["gaussian"]
    assert grid.w == [2.0, -3.4]
    assert grid.b == 4.2
    assert grid.num_val == 1000
    assert grid.replicates == 1
    assert grid.seed == 0
    assert grid.name == "grid"
    assert grid.description == ""
    assert len(grid.runs()) == 1
    assert grid.checkpoints == [0, 3]


def test_grid_scalar_axis_becomes_one_value_list():
    grid = Grid(lr=0.1, num_train=20, loss="huber", epoch=2)
    assert grid.lr == [0.1]
    assert grid.num_train == [20]
    assert grid.loss == ["huber"]
    assert grid.epoch == [2]


def test_grid_duplicates_warn_with_count_and_are_deduped():
    with pytest.warns(UserWarning, match=r"'lr' has 2 duplicate value\(s\)"):
        grid = Grid(lr=[0.1, 0.03, 0.1, 0.1])
    assert grid.lr == [0.1, 0.03]
    assert len(grid.runs()) == 2


def test_grid_duplicates_int_and_float_count_as_one():
    with pytest.warns(UserWarning, match=r"'sigma' has 1 duplicate"):
        grid = Grid(sigma=[1, 1.0])
    assert grid.sigma == [1.0]


def test_grid_epoch_is_sorted():
    grid = Grid(epoch=[10, 1, 3])
    assert grid.epoch == [1, 3, 10]
    assert grid.max_epoch == 10
    assert grid.checkpoints == [0, 1, 3, 10]


def test_grid_runs_count_is_product_of_axes_times_replicates():
    grid = Grid(
        num_train=[10, 20],
        lr=[0.01, 0.03, 0.1],
        loss=["squared", "huber"],
        noise=[0.0, 0.1],
        epoch=[1, 2, 5, 7],
        replicates=3,
    )
    assert len(grid.runs()) == 2 * 3 * 2 * 2 * 3  # epoch is a checkpoint axis, not a run axis


def test_grid_runs_are_in_grid_order():
    grid = Grid(num_train=[10, 20], lr=[0.01, 0.1], replicates=2)
    runs = grid.runs()
    assert [r.index for r in runs] == list(range(len(runs)))
    # axes in AXES order (num_train outermost), replicate innermost
    assert [(r.num_train, r.lr, r.replicate) for r in runs] == [
        (10, 0.01, 0),
        (10, 0.01, 1),
        (10, 0.1, 0),
        (10, 0.1, 1),
        (20, 0.01, 0),
        (20, 0.01, 1),
        (20, 0.1, 0),
        (20, 0.1, 1),
    ]


def test_grid_runs_carry_the_settings():
    run = _first_run(w=[1.0, 2.0, 3.0], b=-1.5, num_val=77, seed=9)
    assert run.w == (1.0, 2.0, 3.0)
    assert run.b == -1.5
    assert run.num_val == 77
    assert run.base_seed == 9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -0.1}, "The 'lr' parameter of Grid must be a finite number > 0. Got -0.1 instead."),
        ({"num_train": [10, 0]}, "The 'num_train' parameter of Grid must be an integer >= 1. Got 0 instead."),
        ({"loss": "hubber"}, "The 'loss' parameter of Grid must be one of ['squared', 'huber']. Got 'hubber' instead."),
        ({"reduction": "max"}, "The 'reduction' parameter of Grid must be one of ['mean', 'sum']. Got 'max' instead."),
        ({"epoch": []}, "The 'epoch' parameter of Grid must be a value or a non-empty list of values. Got [] instead."),
        ({"w": []}, "The 'w' parameter of Grid must be a non-empty list of finite numbers. Got [] instead."),
        ({"b": float("inf")}, "The 'b' parameter of Grid must be a finite number"),
        ({"replicates": 0}, "The 'replicates' parameter of Grid must be an integer >= 1. Got 0 instead."),
        ({"seed": -1}, "The 'seed' parameter of Grid must be an integer >= 0. Got -1 instead."),
        (
            {"num_val": 2.5},
            "The 'num_val' parameter of Grid must be an integer >= 1 (a float only if whole and at most "
            "2**53). Got 2.5 instead.",
        ),
        ({"name": "a/b"}, "The 'name' parameter of Grid must be a file-name-safe string"),
        ({"description": 3}, "The 'description' parameter of Grid must be a string. Got 3 instead."),
        ({"lr_decay": -0.5}, "The 'lr_decay' parameter of Grid must be a finite number >= 0. Got -0.5 instead."),
        (
            {"momentum": [0.0, 1.0]},
            "The 'momentum' parameter of Grid must be a number from 0 up to, not including, 1. Got 1.0 instead.",
        ),
        ({"weight_decay": "x"}, "The 'weight_decay' parameter of Grid must be a finite number >= 0. Got 'x' instead."),
        (
            {"average_from": [-1]},
            "The 'average_from' parameter of Grid must be an epoch (an integer >= 0) or 'none'. Got -1 instead.",
        ),
        (
            {"average_from": "never"},
            "The 'average_from' parameter of Grid must be an epoch (an integer >= 0) or 'none'. Got 'never' instead.",
        ),
        ({"drop_last": [False, 1]}, "The 'drop_last' parameter of Grid must be true or false. Got 1 instead."),
    ],
    ids=[
        "lr",
        "num_train",
        "loss",
        "reduction",
        "epoch",
        "w",
        "b",
        "replicates",
        "seed",
        "num_val",
        "name",
        "description",
        "lr_decay",
        "momentum",
        "weight_decay",
        "average_from",
        "average_from_word",
        "drop_last",
    ],
)
def test_grid_bad_value_raises_naming_parameter_of_grid(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        Grid(**kwargs)


# Run.key and Run.seed ---------------------------------------------------------------------------


def test_run_key_is_16_hex_digits():
    assert re.fullmatch(r"[0-9a-f]{16}", _first_run().key)


def test_mix64_is_splitmix64():
    """splitmix64 seeded with 0 gives e220a8397b1dcdaf, 6e789e6aa1b965f4, 06c45d188009454f
    (Vigna's reference splitmix64.c): its output is mix64 of the state, k times the golden ratio."""
    from study.grid import mix64

    state = np.arange(1, 4, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    assert mix64(state).tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_run_key_depends_on_the_stream():
    assert _first_run(stream="torch").key != _first_run(stream="counter").key
    assert _first_run(stream="torch").seed == _first_run(stream="counter").seed


def test_run_key_equal_for_equal_settings():
    assert _first_run(lr=0.1, num_train=50).key == _first_run(lr=0.1, num_train=50).key


def test_run_key_does_not_depend_on_index():
    run = _first_run()
    assert dataclasses.replace(run, index=41).key == run.key


def test_run_key_differs_when_lr_differs():
    assert _first_run(lr=0.1).key != _first_run(lr=0.2).key


def test_run_key_is_mix64_of_sha256_of_canonical_json_of_the_cell():
    # The key names saved chunks, so it must be the same in every process and session
    # (no hash(), no id(), no dict order): sha256 of sorted-key compact JSON, then the replicate.
    from study.grid import mix64

    # The optimiser's axes enter the cell only away from their defaults, so that the keys of
    # plain SGD are those from before the axes existed.
    from study.vocabulary import LATER_DEFAULTS

    for grid, left_out in (
        (Grid(lr=[0.1], w=[1.0, -2.0], replicates=3), set(LATER_DEFAULTS)),
        (
            Grid(lr=[0.1], w=[1.0, -2.0], replicates=3, momentum=[0.9], average_from=[2], drop_last=[True]),
            {"lr_decay", "weight_decay"},
        ),
    ):
        run = grid.runs()[2]
        doc = {
            f.name: getattr(run, f.name)
            for f in dataclasses.fields(run)
            if f.name not in ("index", "replicate", "num_inputs", *left_out)
        }
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        cell = int.from_bytes(hashlib.sha256(canonical).digest()[:8], "big")
        expected = mix64(np.array([(cell + 3 * 0x9E3779B97F4A7C15) % 2**64], dtype=np.uint64))[0]
        assert run.key == f"{int(expected):016x}"
    # The key this run had before the axes existed (computed on main before them).
    assert Grid(lr=[0.1], w=[1.0, -2.0], replicates=3).runs()[2].key == "8d14e49dc2fe8112"


def test_run_seeds_and_keys_of_a_grid_are_distinct_over_many_replicates():
    from study.grid import run_keys, stream_seeds

    reps = np.arange(200_000)
    seeds = stream_seeds(dict(num_train=10, num_val=5, noise=0.1, noise_kind="gaussian", batch_size=32), 0, reps)
    assert seeds.dtype == np.int64 and seeds.min() >= 0 and len(np.unique(seeds)) == len(reps)
    assert len(np.unique(run_keys({"lr": 0.1}, reps))) == len(reps)


@pytest.mark.parametrize(
    "change",
    [{"lr": 0.5}, {"loss": "huber"}, {"loss": "huber", "sigma": 0.25}, {"reduction": "sum"}],
    ids=["lr", "loss", "sigma", "reduction"],
)
def test_run_seed_shared_by_runs_differing_only_in_optimisation(change):
    base = _first_run(**({"loss": "huber"} if "sigma" in change else {}))
    other = _first_run(**change)
    assert other.key != base.key
    assert other.seed == base.seed


def test_run_seed_shared_within_one_grid_across_lr_and_loss():
    # σ applies to the Huber loss only: a squared run is one run whatever the sigma axis lists.
    runs = Grid(lr=[0.01, 0.1], loss=["squared", "huber"], sigma=[0.5, 2.0]).runs()
    assert len(runs) == 6 == Grid(lr=[0.01, 0.1], loss=["squared", "huber"], sigma=[0.5, 2.0]).n_runs
    assert len({r.seed for r in runs}) == 1
    assert [(r.loss, r.sigma) for r in runs[:3]] == [("squared", 0.5), ("huber", 0.5), ("huber", 2.0)]


def test_an_axis_that_does_not_apply_keys_a_run_once():
    """σ of a squared run: the run is keyed at σ = 1 (the key of a squared run at the default σ
    from before the rule), whatever σ the grid lists; a Huber run's σ is its own."""
    squared = [Grid(loss=["squared"], sigma=[s]).runs()[0] for s in (0.5, 1.0, 2.0)]
    assert len({r.key for r in squared}) == 1 and squared[1].key == Grid().runs()[0].key
    huber = [Grid(loss=["huber"], sigma=[s]).runs()[0] for s in (0.5, 2.0)]
    assert huber[0].key != huber[1].key


@pytest.mark.parametrize(
    "change",
    [{"num_train": 999}, {"noise": 0.5}, {"noise_kind": "student_t"}, {"batch_size": 16}, {"num_val": 10}, {"seed": 1}],
    ids=["num_train", "noise", "noise_kind", "batch_size", "num_val", "base_seed"],
)
def test_run_seed_differs_when_data_settings_differ(change):
    assert _first_run(**change).seed != _first_run().seed


def test_run_seed_differs_between_replicates():
    runs = Grid(replicates=5).runs()
    assert len({r.seed for r in runs}) == 5


def test_run_seed_fits_in_int64():
    runs = Grid(num_train=log_sizes(1, 1000), noise=[0.0, 0.1, 1.0], replicates=10, seed=123).runs()
    seeds = [r.seed for r in runs]
    assert all(isinstance(s, int) and 0 <= s <= INT64_MAX for s in seeds)
    assert len(set(seeds)) == len(seeds)


# load_grid: good specs --------------------------------------------------------------------------


def test_load_grid_reads_a_spec_and_name_defaults_to_stem(tmp_path):
    path = _write(
        tmp_path,
        """
description = "a tiny study"

[grid]
num_train = [20, 50]
lr = 0.1
epoch = [3, 1]
loss = ["squared", "huber"]
noise = 0
w = [1, 2, 3]
b = -1
replicates = 2
seed = 7
""",
        name="tiny-study.toml",
    )
    grid = load_grid(path)
    assert grid.name == "tiny-study"
    assert grid.description == "a tiny study"
    assert grid.num_train == [20, 50]
    assert grid.lr == [0.1]
    assert grid.epoch == [1, 3]
    assert grid.loss == ["squared", "huber"]
    assert grid.noise == [0.0]
    assert grid.w == [1.0, 2.0, 3.0]
    assert grid.b == -1.0
    assert grid.replicates == 2
    assert grid.seed == 7
    assert grid.num_val == 1000  # a default
    assert len(grid.runs()) == 2 * 2 * 2


def test_load_grid_name_key_overrides_stem(tmp_path):
    path = _write(tmp_path, 'name = "ex1"\ndescription = "d"\n[grid]\nlr = [0.01]\n', name="spec.toml")
    grid = load_grid(path)
    assert grid.name == "ex1"
    assert grid.description == "d"


def test_load_grid_empty_grid_table_gives_defaults(tmp_path):
    grid = load_grid(_write(tmp_path, "[grid]\n", name="d.toml"))
    defaults = Grid().to_dict()
    assert {k: v for k, v in grid.to_dict().items() if k != "name"} == {
        k: v for k, v in defaults.items() if k != "name"
    }
    assert grid.name == "d"


def test_load_grid_accepts_str_path(tmp_path):
    assert load_grid(str(_write(tmp_path, "[grid]\nlr = 0.2\n", name="s.toml"))).lr == [0.2]


def test_load_grid_duplicates_warn(tmp_path):
    path = _write(tmp_path, "[grid]\nnum_train = [10, 10, 20]\n", name="dup.toml")
    with pytest.warns(UserWarning, match=r"'num_train' has 1 duplicate"):
        grid = load_grid(path)
    assert grid.num_train == [10, 20]


# load_grid: bad specs ---------------------------------------------------------------------------

_WHERE = "key of [grid] in bad.toml"
_BAD_SPECS = [
    (
        "unknown_key",
        "[grid]\nfoo = 1\n",
        re.escape("Unknown key 'foo' in [grid] in bad.toml")
        + r".*valid keys are \[.*'num_train'.*'lr'.*'seed', 'stream'\]",
    ),
    (
        "misspelt_axis",
        "[grid]\nlrs = [0.1]\n",
        re.escape("Unknown key 'lrs' in [grid] in bad.toml (did you mean 'lr'?)"),
    ),
    (
        "bad_stream",
        '[grid]\nstream = "numpy"\n',
        re.escape("The 'stream' key of [grid] in bad.toml must be one of ['counter', 'torch']. Got 'numpy' instead."),
    ),
    ("misspelt_setting", "[grid]\nreplicate = 3\n", re.escape("(did you mean 'replicates'?)")),
    (
        "lr_wrong_type",
        '[grid]\nlr = "fast"\n',
        re.escape(f"The 'lr' {_WHERE} must be a finite number > 0. Got 'fast' instead."),
    ),
    (
        "num_train_negative",
        "[grid]\nnum_train = [-5]\n",
        re.escape(f"The 'num_train' {_WHERE} must be an integer >= 1. Got -5 instead."),
    ),
    ("lr_zero", "[grid]\nlr = 0\n", re.escape(f"The 'lr' {_WHERE} must be a finite number > 0. Got 0 instead.")),
    ("lr_nan", "[grid]\nlr = nan\n", re.escape(f"The 'lr' {_WHERE} must be a finite number > 0. Got nan instead.")),
    (
        "lr_inf",
        "[grid]\nlr = [0.1, inf]\n",
        re.escape(f"The 'lr' {_WHERE} must be a finite number > 0. Got inf instead."),
    ),
    (
        "lr_empty",
        "[grid]\nlr = []\n",
        re.escape(f"The 'lr' {_WHERE} must be a value or a non-empty list of values. Got [] instead."),
    ),
    (
        "loss_unknown",
        '[grid]\nloss = "hubber"\n',
        re.escape(f"The 'loss' {_WHERE} must be one of ['squared', 'huber']. Got 'hubber' instead."),
    ),
    (
        "reduction_unknown",
        '[grid]\nreduction = ["mean", "avg"]\n',
        re.escape(f"The 'reduction' {_WHERE} must be one of ['mean', 'sum']. Got 'avg' instead."),
    ),
    (
        "epoch_zero",
        "[grid]\nepoch = [0, 3]\n",
        re.escape(f"The 'epoch' {_WHERE} must be an integer >= 1. Got 0 instead."),
    ),
    (
        "replicates_zero",
        "[grid]\nreplicates = 0\n",
        re.escape(f"The 'replicates' {_WHERE} must be an integer >= 1. Got 0 instead."),
    ),
    (
        "replicates_list",
        "[grid]\nreplicates = [2]\n",
        re.escape(f"The 'replicates' {_WHERE} must be an integer >= 1. Got [2] instead."),
    ),
    (
        "sigma_zero",
        "[grid]\nsigma = 0.0\n",
        re.escape(f"The 'sigma' {_WHERE} must be a finite number > 0. Got 0.0 instead."),
    ),
    (
        "batch_size_zero",
        "[grid]\nbatch_size = 0\n",
        re.escape(f"The 'batch_size' {_WHERE} must be an integer >= 1. Got 0 instead."),
    ),
    (
        "w_not_numbers",
        '[grid]\nw = ["a", 1]\n',
        re.escape(f"The 'w' {_WHERE} must be a non-empty list of finite numbers. Got ['a', 1] instead."),
    ),
    (
        "w_empty",
        "[grid]\nw = []\n",
        re.escape(f"The 'w' {_WHERE} must be a non-empty list of finite numbers. Got [] instead."),
    ),
    (
        "b_string",
        '[grid]\nb = "4.2"\n',
        re.escape(f"The 'b' {_WHERE} must be a finite number") + r".*Got '4\.2' instead",
    ),
    (
        "num_train_bool",
        "[grid]\nnum_train = true\n",
        re.escape(f"The 'num_train' {_WHERE} must be an integer >= 1. Got True instead."),
    ),
    (
        "num_train_float_too_large",
        "[grid]\nnum_train = 1e20\n",
        re.escape(
            f"The 'num_train' {_WHERE} must be an integer >= 1 (a float only if whole and at most 2**53). Got 1e+20 instead."
        ),
    ),
    (
        "num_train_fraction",
        "[grid]\nnum_train = [10, 2.5]\n",
        re.escape(
            f"The 'num_train' {_WHERE} must be an integer >= 1 (a float only if whole and at most 2**53). Got 2.5 instead."
        ),
    ),
    (
        "num_val_zero",
        "[grid]\nnum_val = 0\n",
        re.escape(f"The 'num_val' {_WHERE} must be an integer >= 1. Got 0 instead."),
    ),
    (
        "seed_negative",
        "[grid]\nseed = -3\n",
        re.escape(f"The 'seed' {_WHERE} must be an integer >= 0. Got -3 instead."),
    ),
    (
        "noise_negative",
        "[grid]\nnoise = -0.1\n",
        re.escape(f"The 'noise' {_WHERE} must be a finite number >= 0. Got -0.1 instead."),
    ),
    (
        "noise_kind_unknown",
        '[grid]\nnoise_kind = "cauchy"\n',
        re.escape(
            f"The 'noise_kind' {_WHERE} must be one of ['gaussian', 'student_t', 'outliers']. Got 'cauchy' instead."
        ),
    ),
    (
        "axis_subtable",
        "[grid.lr]\nvalue = 0.1\n",
        re.escape(
            f"The 'lr' {_WHERE} must be a value, a list of values, or a log range {{log = [lo, hi]}} with an optional "
            "per_decade (its keys: ['log', 'per_decade']). Got {'value': 0.1} instead."
        ),
    ),
    (
        "unknown_top_level_key",
        'title = "x"\n[grid]\n',
        re.escape("Unknown top-level key 'title' in bad.toml; valid keys are ['name', 'description', 'grid']."),
    ),
    ("missing_grid_table", 'name = "x"\n', re.escape("bad.toml must have a [grid] table; got None.")),
    ("grid_not_a_table", "grid = 3\n", re.escape("bad.toml must have a [grid] table; got 3.")),
    (
        "name_not_string",
        "name = 3\n[grid]\n",
        re.escape(
            "The 'name' key of bad.toml must be a file-name-safe string (letters, digits, '_', '.', '-'). Got 3 instead."
        ),
    ),
    (
        "description_not_string",
        "description = [1]\n[grid]\n",
        re.escape("The 'description' key of bad.toml must be a string. Got [1] instead."),
    ),
    ("not_toml", "this is not = = toml {\n", r"bad\.toml' is not a valid TOML file"),
    ("name_in_grid_table", '[grid]\nname = "x"\n', re.escape("Unknown key 'name' in [grid] in bad.toml")),
]


@pytest.mark.parametrize(("text", "match"), [(t, m) for _, t, m in _BAD_SPECS], ids=[i for i, _, _ in _BAD_SPECS])
def test_load_grid_bad_spec_raises_naming_key_and_value(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=match):
        load_grid(path)


def test_load_grid_unknown_key_message_lists_every_valid_key(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        load_grid(_write(tmp_path, "[grid]\nfoo = 1\n"))
    for key in (*AXES, *SETTINGS):
        assert repr(key) in str(excinfo.value)


def test_load_grid_unsafe_name_is_reported_as_a_top_level_key(tmp_path):
    # `name` is a top-level key (in [grid] it is refused as unknown), so the message must
    # send the user to the top level, not to [grid].
    path = _write(tmp_path, 'name = "../escape"\n[grid]\n')
    with pytest.raises(ValueError, match=re.escape("The 'name' key of bad.toml must be a file-name-safe string")):
        load_grid(path)


def test_load_grid_binary_file_raises(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(ValueError, match=r"is not a valid TOML file"):
        load_grid(path)


def test_load_grid_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("No spec file at") + r".*nope\.toml"):
        load_grid(tmp_path / "nope.toml")


def test_load_grid_folder_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No spec file at"):
        load_grid(tmp_path)


def test_load_grid_default_name_from_a_stem_with_a_space_loads(tmp_path):
    # The user wrote no name: a legal file name must not make a good spec fail, and least
    # of all with a message about a 'name' key of [grid] that is not there.
    path = _write(tmp_path, "[grid]\nlr = 0.1\n", name="my study.toml")
    grid = load_grid(path)
    assert grid.lr == [0.1]
    assert grid.name


# Log ranges: `axis = { log = [lo, hi], per_decade = n }` -----------------------------------------

_EXPERIMENTS = Path(__file__).resolve().parent.parent / "study" / "exercises" / "specs"


@pytest.mark.parametrize("axis", ["num_train", "batch_size", "epoch"])
def test_log_range_on_an_integer_axis_is_log_sizes(tmp_path, axis):
    grid = load_grid(_write(tmp_path, f"[grid]\n{axis} = {{ log = [5, 10000] }}\n", name="log.toml"))
    assert getattr(grid, axis) == log_sizes(5, 10_000)
    assert all(type(v) is int for v in getattr(grid, axis))


@pytest.mark.parametrize(
    ("bounds", "per_decade"),
    [((1, 1), 3), ((3, 40), 3), ((7, 7000), 1), ((1, 1000), 2), ((2, 10_000), 4), ((1, 300), 10)],
)
def test_log_range_equals_log_sizes_for_any_bounds_and_per_decade(bounds, per_decade):
    lo, hi = bounds
    grid = Grid(num_train={"log": [lo, hi], "per_decade": per_decade})
    assert grid.num_train == log_sizes(lo, hi, per_decade)


def test_log_range_as_a_toml_subtable(tmp_path):
    grid = load_grid(_write(tmp_path, "[grid.num_train]\nlog = [5, 10000]\nper_decade = 3\n", name="sub.toml"))
    assert grid.num_train == log_sizes(5, 10_000)


def test_log_range_whole_float_bounds_on_an_integer_axis(tmp_path):
    grid = load_grid(_write(tmp_path, "[grid]\nnum_train = { log = [5.0, 1e4], per_decade = 3.0 }\n", name="f.toml"))
    assert grid.num_train == log_sizes(5, 10_000)


@pytest.mark.parametrize(
    ("per_decade", "expected"),
    [
        (1, [0.001, 0.01, 0.1, 1.0]),
        (2, [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]),
        (3, [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]),
        (4, [0.001, 0.00178, 0.00316, 0.00562, 0.01, 0.0178, 0.0316, 0.0562, 0.1, 0.178, 0.316, 0.562, 1.0]),
    ],
)
def test_log_range_on_lr_gives_the_floats_a_user_would_type(tmp_path, per_decade, expected):
    # Equal as floats, not approximately: 0.3 is the literal 0.3, not 3 * 0.1.
    grid = load_grid(
        _write(tmp_path, f"[grid]\nlr = {{ log = [1e-3, 1], per_decade = {per_decade} }}\n", name="lr.toml")
    )
    assert grid.lr == expected


def test_log_range_default_per_decade_is_1_2_5():
    assert Grid(lr={"log": [1e-3, 1]}).lr == Grid(lr={"log": [1e-3, 1], "per_decade": 3}).lr


@pytest.mark.parametrize("axis", ["sigma", "noise"])
def test_log_range_on_sigma_and_noise(axis):
    assert getattr(Grid(**{axis: {"log": [0.1, 2]}}), axis) == [0.1, 0.2, 0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("spec", "axis", "form"),
    [
        ("ex1_reduction.toml", "lr", {"log": [1e-5, 10], "per_decade": 4}),
        ("ex3_gradients.toml", "lr", {"log": [0.003, 0.3], "per_decade": 2}),
        ("ex4_lr_epochs.toml", "lr", {"log": [1e-3, 3], "per_decade": 2}),
        ("ex5_data_size.toml", "num_train", {"log": [5, 10_000]}),
    ],
)
def test_log_range_spells_the_axes_typed_out_in_the_experiments(spec, axis, form):
    # The same values, hence the same run keys and seeds: a spec may switch to the short form
    # and reuse every stored run.
    typed = load_grid(_EXPERIMENTS / spec)
    short = Grid(**{**typed.to_dict(), axis: form})
    assert getattr(short, axis) == getattr(typed, axis)
    assert [r.key for r in short.runs()] == [r.key for r in typed.runs()]
    assert [r.seed for r in short.runs()] == [r.seed for r in typed.runs()]


def test_log_range_is_stored_as_its_list():
    grid = Grid(num_train={"log": [5, 50]})
    assert grid.to_dict()["num_train"] == [5, 10, 20, 50]


_LOG_WHERE = "key of [grid] in bad.toml"
_BAD_LOG_RANGES = [
    # (id, axis, TOML value, what is allowed, the value as shown)
    (
        "unknown_subkey",
        "num_train",
        "{ log = [5, 100], step = 2 }",
        "a value, a list of values, or a log range {log = [lo, hi]} with an optional per_decade (its keys: "
        "['log', 'per_decade'])",
        "{'log': [5, 100], 'step': 2}",
    ),
    (
        "missing_log",
        "lr",
        "{ per_decade = 3 }",
        "a value, a list of values, or a log range {log = [lo, hi]} with an optional per_decade (its keys: "
        "['log', 'per_decade'])",
        "{'per_decade': 3}",
    ),
    (
        "misspelt_log",
        "epoch",
        "{ logs = [1, 10] }",
        "a value, a list of values, or a log range {log = [lo, hi]} with an optional per_decade (its keys: "
        "['log', 'per_decade'])",
        "{'logs': [1, 10]}",
    ),
    ("one_bound", "num_train", "{ log = [5] }", "a log range whose 'log' is a pair [lo, hi]", "{'log': [5]}"),
    (
        "three_bounds",
        "lr",
        "{ log = [0.1, 1, 10] }",
        "a log range whose 'log' is a pair [lo, hi]",
        "{'log': [0.1, 1, 10]}",
    ),
    ("bounds_not_a_list", "num_train", "{ log = 100 }", "a log range whose 'log' is a pair [lo, hi]", "{'log': 100}"),
    (
        "int_bound_zero",
        "num_train",
        "{ log = [0, 100] }",
        "a log range whose bounds are integers >= 1",
        "{'log': [0, 100]}",
    ),
    (
        "int_bound_negative",
        "batch_size",
        "{ log = [-8, 64] }",
        "a log range whose bounds are integers >= 1",
        "{'log': [-8, 64]}",
    ),
    (
        "int_bound_fraction",
        "num_train",
        "{ log = [2.5, 100] }",
        "a log range whose bounds are integers >= 1",
        "{'log': [2.5, 100]}",
    ),
    (
        "int_bound_string",
        "epoch",
        '{ log = [1, "10"] }',
        "a log range whose bounds are integers >= 1",
        "{'log': [1, '10']}",
    ),
    (
        "int_bound_bool",
        "epoch",
        "{ log = [true, 10] }",
        "a log range whose bounds are integers >= 1",
        "{'log': [True, 10]}",
    ),
    ("real_bound_zero", "lr", "{ log = [0, 1] }", "a log range whose bounds are finite numbers > 0", "{'log': [0, 1]}"),
    (
        "noise_bound_zero",
        "noise",
        "{ log = [0.0, 1] }",
        "a log range whose bounds are finite numbers > 0",
        "{'log': [0.0, 1]}",
    ),
    (
        "real_bound_inf",
        "sigma",
        "{ log = [0.1, inf] }",
        "a log range whose bounds are finite numbers > 0",
        "{'log': [0.1, inf]}",
    ),
    (
        "real_bound_nan",
        "lr",
        "{ log = [nan, 1] }",
        "a log range whose bounds are finite numbers > 0",
        "{'log': [nan, 1]}",
    ),
    (
        "real_bound_string",
        "lr",
        '{ log = ["1e-3", 1] }',
        "a log range whose bounds are finite numbers > 0",
        "{'log': ['1e-3', 1]}",
    ),
    ("int_lo_above_hi", "num_train", "{ log = [10000, 5] }", "a log range with lo <= hi", "{'log': [10000, 5]}"),
    ("real_lo_above_hi", "lr", "{ log = [1, 1e-3] }", "a log range with lo <= hi", "{'log': [1, 0.001]}"),
    (
        "per_decade_zero",
        "num_train",
        "{ log = [5, 100], per_decade = 0 }",
        "a log range whose per_decade is an integer from 1 to 100",
        "{'log': [5, 100], 'per_decade': 0}",
    ),
    (
        "per_decade_too_many",
        "lr",
        "{ log = [0.01, 1], per_decade = 101 }",
        "a log range whose per_decade is an integer from 1 to 100",
        "{'log': [0.01, 1], 'per_decade': 101}",
    ),
    (
        "per_decade_fraction",
        "lr",
        "{ log = [0.01, 1], per_decade = 2.5 }",
        "a log range whose per_decade is an integer from 1 to 100",
        "{'log': [0.01, 1], 'per_decade': 2.5}",
    ),
    (
        "per_decade_string",
        "lr",
        '{ log = [0.01, 1], per_decade = "3" }',
        "a log range whose per_decade is an integer from 1 to 100",
        "{'log': [0.01, 1], 'per_decade': '3'}",
    ),
    (
        "empty_int_range",
        "num_train",
        "{ log = [3, 4] }",
        "a log range that holds at least one value (1, 2, 5 times a power of 10)",
        "{'log': [3, 4]}",
    ),
    (
        "empty_real_range",
        "lr",
        "{ log = [0.003, 0.009], per_decade = 1 }",
        "a log range that holds at least one value (1 times a power of 10)",
        "{'log': [0.003, 0.009], 'per_decade': 1}",
    ),
    (
        "empty_range_per_decade_4",
        "lr",
        "{ log = [0.2, 0.3], per_decade = 4 }",
        "a log range that holds at least one value (1, 1.78, 3.16, 5.62 times a power of 10)",
        "{'log': [0.2, 0.3], 'per_decade': 4}",
    ),
    ("choice_axis", "loss", "{ log = [1, 10] }", "one of ['squared', 'huber']", "{'log': [1, 10]}"),
    ("in_a_list", "num_train", "[{ log = [5, 100] }, 1000]", "an integer >= 1", "{'log': [5, 100]}"),
    ("on_a_setting", "replicates", "{ log = [1, 10] }", "an integer >= 1", "{'log': [1, 10]}"),
]


@pytest.mark.parametrize(
    ("axis", "toml", "allowed", "shown"), [c[1:] for c in _BAD_LOG_RANGES], ids=[c[0] for c in _BAD_LOG_RANGES]
)
def test_log_range_bad_form_raises_naming_key_and_value(tmp_path, axis, toml, allowed, shown):
    path = _write(tmp_path, f"[grid]\n{axis} = {toml}\n")
    with pytest.raises(ValueError) as excinfo:
        load_grid(path)
    message = str(excinfo.value)
    assert message == f"The {axis!r} {_LOG_WHERE} must be {allowed}. Got {shown} instead."
    assert "\n" not in message


def test_log_range_bad_form_in_python_names_parameter_of_grid():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "The 'num_train' parameter of Grid must be a log range with lo <= hi. Got {'log': [100, 5]} instead."
        ),
    ):
        Grid(num_train={"log": [100, 5]})


def test_log_range_huge_python_int_bound_is_refused_not_crashed():
    with pytest.raises(ValueError, match=r"'lr' parameter of Grid must be a log range whose bounds are finite"):
        Grid(lr={"log": [1, 10**400]})


# Whole floats for integer keys: `num_train = [10, 1e3]` ------------------------------------------

_INT_KEYS = [  # key, a whole float, the int it stands for, how a Grid holds it
    ("num_train", 1e3, 1000, [1000]),
    ("batch_size", 3.2e1, 32, [32]),
    ("epoch", 5.0, 5, [5]),
    ("num_val", 2e2, 200, 200),
    ("replicates", 2.0, 2, 2),
    ("seed", 7e0, 7, 7),
]


@pytest.mark.parametrize(("key", "whole", "integer", "held"), _INT_KEYS, ids=[k[0] for k in _INT_KEYS])
def test_whole_float_is_taken_as_the_int(key, whole, integer, held):
    grid = Grid(**{key: whole})
    assert getattr(grid, key) == held
    value = getattr(grid, key)
    assert all(type(v) is int for v in (value if isinstance(value, list) else [value]))


@pytest.mark.parametrize(("key", "whole", "integer", "held"), _INT_KEYS, ids=[k[0] for k in _INT_KEYS])
def test_whole_float_gives_the_run_keys_and_seeds_of_the_int(key, whole, integer, held):
    as_float = Grid(**{key: whole}).runs()
    as_int = Grid(**{key: integer}).runs()
    assert [r.key for r in as_float] == [r.key for r in as_int]
    assert [r.seed for r in as_float] == [r.seed for r in as_int]
    assert as_float == as_int


def test_whole_floats_in_toml_give_the_grid_of_the_ints(tmp_path):
    floats = load_grid(
        _write(
            tmp_path,
            """
[grid]
num_train = [10, 1e3]
batch_size = 1.6e1
epoch = [1.0, 3]
num_val = 5e2
replicates = 3.0
seed = 1e1
""",
            name="s.toml",
        )
    )
    ints = load_grid(
        _write(
            tmp_path,
            """
[grid]
num_train = [10, 1000]
batch_size = 16
epoch = [1, 3]
num_val = 500
replicates = 3
seed = 10
""",
            name="s.toml",
        )
    )
    assert floats.to_dict() == ints.to_dict()
    assert json.dumps(floats.to_dict()) == json.dumps(ints.to_dict())  # 1000, not 1000.0, in the metadata
    assert [(r.key, r.seed) for r in floats.runs()] == [(r.key, r.seed) for r in ints.runs()]


def test_whole_float_and_int_spellings_are_one_value():
    with pytest.warns(UserWarning, match=r"'num_train' has 1 duplicate"):
        grid = Grid(num_train=[1000, 1e3])
    assert grid.num_train == [1000]


def test_whole_float_up_to_2_53_is_exact():
    assert Grid(seed=float(2**53)).seed == 2**53
    assert Grid(num_train=np.float64(1e4)).num_train == [10_000]
    assert type(Grid(num_train=np.float32(64.0)).num_train[0]) is int


_NOT_WHOLE = [
    ("fraction", 1.5, "1.5"),
    ("nan", float("nan"), "nan"),
    ("inf", float("inf"), "inf"),
    ("minus_inf", float("-inf"), "-inf"),
    ("past_2_53", float(2**53 + 2), "9007199254740994.0"),
    ("huge", 1e300, "1e+300"),
]


@pytest.mark.parametrize("key", ["num_train", "batch_size", "epoch", "num_val", "replicates", "seed"])
@pytest.mark.parametrize(("value", "shown"), [c[1:] for c in _NOT_WHOLE], ids=[c[0] for c in _NOT_WHOLE])
def test_non_whole_float_is_refused_naming_key_and_value(key, value, shown):
    low = 0 if key == "seed" else 1
    with pytest.raises(ValueError) as excinfo:
        Grid(**{key: value})
    assert str(excinfo.value) == (
        f"The {key!r} parameter of Grid must be an integer >= {low} (a float only if whole and at most 2**53). "
        f"Got {shown} instead."
    )


@pytest.mark.parametrize(
    ("text", "key", "low", "shown"),
    [
        ("num_train = 0.0", "num_train", 1, "0.0"),
        ("epoch = [-1.0, 3]", "epoch", 1, "-1.0"),
        ("seed = -1e0", "seed", 0, "-1.0"),
        ("replicates = 0e0", "replicates", 1, "0.0"),
    ],
)
def test_whole_float_below_the_bound_is_refused_as_typed(tmp_path, text, key, low, shown):
    with pytest.raises(ValueError) as excinfo:
        load_grid(_write(tmp_path, f"[grid]\n{text}\n"))
    assert str(excinfo.value) == f"The {key!r} {_WHERE} must be an integer >= {low}. Got {shown} instead."


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ("num_train = nan", "num_train", "nan"),
        ("batch_size = [32, inf]", "batch_size", "inf"),
        ("seed = 1e300", "seed", "1e+300"),
        ("num_val = 12.5", "num_val", "12.5"),
    ],
)
def test_non_whole_float_in_toml_is_refused(tmp_path, text, key, shown):
    with pytest.raises(
        ValueError,
        match=re.escape(f"The {key!r} {_WHERE} must be an integer >= ")
        + r"[01]"
        + re.escape(f" (a float only if whole and at most 2**53). Got {shown} instead."),
    ):
        load_grid(_write(tmp_path, f"[grid]\n{text}\n"))


def test_bool_is_still_refused_as_a_count():
    with pytest.raises(
        ValueError, match=re.escape("The 'replicates' parameter of Grid must be an integer >= 1. Got True instead.")
    ):
        Grid(replicates=True)


def test_the_optimisers_axes_read_from_toml_with_none_for_no_averaging(tmp_path):
    spec = tmp_path / "opt.toml"
    spec.write_text(
        '[grid]\nlr_decay = [0, 0.5]\nmomentum = 0.9\nweight_decay = [0.0, 3e-3]\naverage_from = ["none", 0, 2.0]\n'
    )
    grid = load_grid(spec)
    assert (grid.lr_decay, grid.momentum, grid.weight_decay, grid.average_from) == (
        [0.0, 0.5],
        [0.9],
        [0.0, 0.003],
        [None, 0, 2],
    )
    assert grid.n_runs == 2 * 2 * 3
    with pytest.warns(UserWarning, match="'average_from' has 1 duplicate"):
        assert Grid(average_from=[None, "none"]).average_from == [None]  # the same value twice, once


def test_a_grid_cannot_be_changed_and_one_changed_in_place_is_refused_before_any_work(tmp_path):
    """Assigning a field raises; a list changed in place (which a frozen dataclass cannot stop) is
    caught by run_grid's check before anything is trained or written: "bogus" is never taken
    for a loss."""
    import dataclasses

    from study import run_grid

    grid = Grid(num_train=[20], lr=[0.1], loss=["squared", "huber"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.lr = [-1.0]
    grid.loss.append("bogus")
    out = tmp_path / "x.csv"
    with pytest.raises(
        ValueError,
        match=r"^The 'loss' field of the Grid given to run_grid must be one of "
        r"\['squared', 'huber'\]\. Got 'bogus' instead\.$",
    ):
        run_grid(grid, out=out, n_jobs=1, progress=False)
    assert list(tmp_path.iterdir()) == []
    grid.lr.append(-1.0)
    grid.loss.remove("bogus")
    with pytest.raises(ValueError, match=r"^The 'lr' field of the Grid given to run_grid must be"):
        run_grid(grid, n_jobs=1, progress=False)
    changed = Grid(**{**Grid().to_dict(), "lr": [0.5]})
    assert changed.lr == [0.5] and Grid().lr == [0.03]
