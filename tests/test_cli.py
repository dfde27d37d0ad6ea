"""Tests of the `study` command, driven in-process through study.cli.main and once as a process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import study
from study.cli import main

TINY_SPEC = """\
name = "tiny"
description = "two sizes x two learning rates, two checkpoints, two replicates"

[grid]
num_train = [20, 50]
lr = [0.03, 0.1]
epoch = [1, 2]
replicates = 2
num_val = 50
"""
TINY_RUNS = 2 * 2 * 2
TINY_CHECKPOINTS = 3  # epoch 0, 1, 2

_NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Every command runs in tmp_path, so a default output (results/NAME.csv) lands there too."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_spec(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPEC, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def results_csv(tmp_path_factory) -> Path:
    """The tiny grid's results, written once by `study run` for the table tests."""
    folder = tmp_path_factory.mktemp("results")
    spec = folder / "tiny.toml"
    spec.write_text(TINY_SPEC, encoding="utf-8")
    out = folder / "tiny.csv"
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    return out


def _snapshot(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def _assert_refused(code: int, capsys, before: set[Path], folder: Path, *, mentions: str) -> str:
    """Exit 2, one line on stderr that says what is wrong, no traceback, nothing written."""
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert re.search(mentions, lines[0]), lines[0]
    created = _snapshot(folder) - before
    assert not created, f"bad input wrote {sorted(map(str, created))}"
    return lines[0]


def _parse_tensor(line: str) -> list[float]:
    inside = re.search(r"tensor\(\[(.*?)\]", line)
    assert inside, line
    return [float(x) for x in re.findall(_NUMBER, inside.group(1))]


# study demo ---------------------------------------------------------------------------------------


def test_demo_prints_small_errors_like_the_seed(capsys):
    assert main(["demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    w_line = next(line for line in lines if line.startswith("error in estimating w:"))
    b_line = next(line for line in lines if line.startswith("error in estimating b:"))
    assert any(line.startswith("least squares") for line in lines)
    w_err, b_err = _parse_tensor(w_line), _parse_tensor(b_line)
    assert len(w_err) == 2 and len(b_err) == 1
    assert all(abs(e) < 0.1 for e in w_err + b_err), (w_err, b_err)


def test_demo_least_squares_errors_are_tiny(capsys):
    assert main(["demo", "--epochs", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ls_line = next(line for line in lines if line.startswith("least squares"))
    numbers = [abs(float(x)) for x in re.findall(_NUMBER, ls_line.split(":", 1)[1])]
    assert len(numbers) == 3  # two for w, one for b
    assert all(n < 0.01 for n in numbers), ls_line


def test_demo_is_reproducible_for_a_seed(capsys):
    assert main(["demo", "--epochs", "1", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["demo", "--epochs", "1", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first


# study run ----------------------------------------------------------------------------------------


def test_run_writes_csv_and_metadata(tmp_path, tiny_spec, capsys):
    out = tmp_path / "x.csv"
    assert main(["run", str(tiny_spec), "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert out.is_file()
    meta = tmp_path / "x.meta.json"
    assert meta.is_file()
    assert isinstance(json.loads(meta.read_text()), dict)
    df = pd.read_csv(out)
    assert len(df) == TINY_RUNS * TINY_CHECKPOINTS
    assert sorted(df["epoch"].unique()) == [0, 1, 2]
    assert {"num_train", "lr", "replicate", "seed", "w_err_norm", "b_err"} <= set(df.columns)
    assert list((tmp_path / "x.csv.store").glob("*.runs"))  # the runs, kept for the next call
    assert not list(tmp_path.glob(".*.tmp"))


def test_run_csv_is_byte_identical_run_to_run(tmp_path, tiny_spec):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["run", str(tiny_spec), "--out", str(first), "--quiet", "--jobs", "1"]) == 0
    assert main(["run", str(tiny_spec), "--out", str(second), "--quiet", "--jobs", "1", "--fresh"]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_run_default_output_is_results_raw_name_csv(tmp_path, tiny_spec):
    assert main(["run", str(tiny_spec), "--quiet", "--jobs", "1"]) == 0
    assert (tmp_path / "results" / "raw" / "tiny.csv").is_file()
    assert (tmp_path / "results" / "raw" / "tiny.meta.json").is_file()


def test_run_not_quiet_reports_what_it_wrote(tmp_path, tiny_spec, capsys):
    out = tmp_path / "x.csv"
    assert main(["run", str(tiny_spec), "--out", str(out), "--jobs", "1"]) == 0
    stdout = capsys.readouterr().out
    assert f"({TINY_RUNS} runs, {TINY_RUNS * TINY_CHECKPOINTS} rows)" in stdout
    assert "w_err_norm_median" in stdout


def test_run_not_quiet_on_a_one_cell_grid_prints_medians(tmp_path, capsys):
    spec = tmp_path / "one.toml"
    spec.write_text("[grid]\nnum_train = 20\nepoch = 1\nnum_val = 20\n", encoding="utf-8")
    assert main(["run", str(spec), "--out", str(tmp_path / "one.csv"), "--jobs", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "(1 runs, 2 rows)" in stdout
    assert "count" in stdout


# bad input: exit 2, one line, nothing written -------------------------------------------------


def test_run_bad_spec_value_exits_2_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text("[grid]\nlr = 0\n", encoding="utf-8")
    before = _snapshot(tmp_path)
    code = main(["run", str(spec), "--out", str(tmp_path / "x.csv"), "--quiet", "--jobs", "1"])
    _assert_refused(code, capsys, before, tmp_path, mentions=re.escape("The 'lr' key of [grid] in bad.toml"))


@pytest.mark.parametrize(
    "line, mentions",
    [
        (
            "momentum = 1.5",
            r"The 'momentum' key of \[grid\] in bad\.toml must be a number from 0 up to, not including, 1\. "
            r"Got 1\.5 instead\.",
        ),
        (
            'average_from = ["none", "last"]',
            r"The 'average_from' key of \[grid\] in bad\.toml must be an epoch \(an "
            r"integer >= 0\) or 'none'\. Got 'last' instead\.",
        ),
        ("lr_decay = -1", r"The 'lr_decay' key .* must be a finite number >= 0\. Got -1 instead\."),
        ("weight_decay = [0.1, -0.1]", r"The 'weight_decay' key .* Got -0\.1 instead\."),
    ],
)
def test_run_bad_optimiser_axis_exits_2_naming_the_key(tmp_path, capsys, line, mentions):
    spec = tmp_path / "bad.toml"
    spec.write_text(f"[grid]\n{line}\n", encoding="utf-8")
    before = _snapshot(tmp_path)
    code = main(["run", str(spec), "--out", str(tmp_path / "x.csv"), "--quiet", "--jobs", "1"])
    _assert_refused(code, capsys, before, tmp_path, mentions=mentions)


def test_run_the_optimisers_axes_from_a_spec_and_select_them(tmp_path, capsys):
    """A spec with every optimiser axis runs; its table has their columns, and --where takes
    average_from=none as it takes any axis."""
    import pandas as pd

    spec = tmp_path / "opt.toml"
    spec.write_text(
        "[grid]\nnum_train = 40\nlr = 0.1\nlr_decay = [0, 0.5]\nmomentum = [0, 0.5]\n"
        'weight_decay = 0.01\naverage_from = ["none", 1]\nepoch = [1, 2]\nnum_val = 20\n',
        encoding="utf-8",
    )
    out = tmp_path / "opt.csv"
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    df = pd.read_csv(out)
    assert len(df) == 8 * 3 and set(df["average_from"].astype(str)) == {"none", "1"}
    assert set(df["momentum"]) == {0.0, 0.5} and set(df["weight_decay"]) == {0.01}
    capsys.readouterr()
    assert main(["table", str(out), "--where", "average_from=none", "--where", "lr_decay=0.5"]) == 0
    printed = capsys.readouterr().out
    assert "average_from = none" in printed or "average_from" in printed


def test_run_bad_spec_value_with_default_output_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text('[grid]\nloss = "hubber"\n', encoding="utf-8")
    before = _snapshot(tmp_path)
    code = main(["run", str(spec), "--quiet", "--jobs", "1"])
    _assert_refused(code, capsys, before, tmp_path, mentions="'hubber'")


def test_run_missing_spec_exits_2(tmp_path, capsys):
    before = _snapshot(tmp_path)
    code = main(["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "x.csv"), "--quiet"])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"No spec file at .*nope\.toml")


def test_run_unknown_engine_exits_2(tmp_path, tiny_spec, capsys):
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--out", str(tmp_path / "x.csv"), "--engine", "warp", "--quiet"])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"--engine.*'warp'")


def test_run_zero_jobs_exits_2(tmp_path, tiny_spec, capsys):
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--out", str(tmp_path / "x.csv"), "--jobs", "0", "--quiet"])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"--jobs.*'0'")


@pytest.mark.parametrize(
    "args, mentions",
    [
        (["--scheduler", "tcp://127.0.0.1:8786"], r"'--scheduler' option.*None unless backend is 'dask'"),
        (["--backend", "dask", "--scheduler", "nowhere"], r"'--scheduler' option.*tcp://HOST:PORT.*Got 'nowhere'"),
        (["--chunk-timeout", "60"], r"'--chunk-timeout' option.*None unless backend is 'dask'"),
        (["--backend", "dask", "--chunk-timeout", "0"], r"--chunk-timeout.*'0'"),
        (["--backend", "dask", "--chunk-timeout", "soon"], r"--chunk-timeout.*'soon'"),
        (["--backend", "multiprocessing"], r"--backend.*'multiprocessing'"),
    ],
)
def test_run_bad_dask_options_exit_2(tmp_path, tiny_spec, capsys, args, mentions):
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--out", str(tmp_path / "x.csv"), "--quiet", *args])
    _assert_refused(code, capsys, before, tmp_path, mentions=mentions)


def test_run_help_names_the_dask_options(capsys):
    assert main(["run", "--help"]) == 0
    stdout = capsys.readouterr().out
    assert "--scheduler ADDRESS" in stdout and "--chunk-timeout SECONDS" in stdout and "dask" in stdout


def test_run_bad_device_exits_2(tmp_path, tiny_spec, capsys):
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--out", str(tmp_path / "x.csv"), "--device", "tpu", "--quiet", "--jobs", "1"])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"'--device' option.*'tpu'")


def test_run_out_not_csv_exits_2(tmp_path, tiny_spec, capsys):
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--out", str(tmp_path / "x.txt"), "--quiet", "--jobs", "1"])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"'--out' option.*\.csv")


def test_run_out_is_a_folder_exits_2(tmp_path, tiny_spec, capsys):
    (tmp_path / "dir.csv").mkdir()
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--out", str(tmp_path / "dir.csv"), "--quiet", "--jobs", "1"])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"'--out' option.*not a folder")


def test_run_out_in_read_only_folder_exits_2(tmp_path, tiny_spec, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user can write a 0o500 folder (root)")
        before = _snapshot(tmp_path)
        code = main(["run", str(tiny_spec), "--out", str(locked / "sub" / "x.csv"), "--quiet", "--jobs", "1"])
        _assert_refused(code, capsys, before, tmp_path, mentions=r"'--out' option.*can be written")
    finally:
        locked.chmod(0o700)


def test_unknown_subcommand_exits_2(tmp_path, capsys):
    before = _snapshot(tmp_path)
    _assert_refused(main(["frobnicate"]), capsys, before, tmp_path, mentions="frobnicate")


def test_no_subcommand_exits_2(tmp_path, capsys):
    before = _snapshot(tmp_path)
    _assert_refused(main([]), capsys, before, tmp_path, mentions="command")


def test_table_missing_csv_exits_2(tmp_path, capsys):
    before = _snapshot(tmp_path)
    code = main(["table", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "summary.csv")])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"No results file at .*nope\.csv")


def test_table_not_a_results_csv_exits_2(tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    before = _snapshot(tmp_path)
    code = main(["table", str(other), "--out", str(tmp_path / "summary.csv")])
    _assert_refused(code, capsys, before, tmp_path, mentions="lacks the columns")


def test_table_unknown_by_column_exits_2(tmp_path, results_csv, capsys):
    before = _snapshot(tmp_path)
    code = main(["table", str(results_csv), "--by", "lr,nosuchcolumn", "--out", str(tmp_path / "summary.csv")])
    _assert_refused(
        code,
        capsys,
        before,
        tmp_path,
        mentions=r"The '--by' option must be columns of the table \(its axes: num_train, .*Got 'nosuchcolumn'",
    )


def test_table_out_not_csv_exits_2(tmp_path, results_csv, capsys):
    before = _snapshot(tmp_path)
    code = main(["table", str(results_csv), "--out", str(tmp_path / "summary.xlsx")])
    _assert_refused(
        code,
        capsys,
        before,
        tmp_path,
        mentions=r"The '--out' option must be a path ending in \.csv or \.parquet\. Got '.*summary\.xlsx'",
    )


def test_table_and_plot_name_the_format_and_what_is_wrong_in_one_line(tmp_path, results_csv, capsys):
    """A Parquet file is called one (not "a results CSV"); a cut file, a CSV column of text
    where numbers belong, and a --where that selects no rows are each said in one line."""
    import pandas as pd

    pd.read_csv(results_csv).drop(columns=["seed"]).to_parquet(tmp_path / "noseed.parquet")
    whole = tmp_path / "whole.parquet"
    pd.read_csv(results_csv).to_parquet(whole)
    (tmp_path / "cut.parquet").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    lines = results_csv.read_text().splitlines()
    cells = lines[3].split(",")
    cells[0] = "ten"  # num_train
    (tmp_path / "typed.csv").write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]) + "\n")
    cases = [
        (
            ["table", "noseed.parquet"],
            r"noseed.parquet' is not a results table: the Parquet file lacks the columns seed\.",
        ),
        (["plot", "cut.parquet", "--x", "lr"], r"cut.parquet' is not a readable Parquet file: "),
        (
            ["table", "typed.csv"],
            r"typed.csv' is not a results table: its column num_train must hold numbers, "
            r"but holds 'ten'\.",
        ),
    ]
    for argv, message in cases:
        before = _snapshot(tmp_path)
        _assert_refused(main(argv), capsys, before, tmp_path, mentions=message)
    # Every value is in the table, but not together: the one that empties the choice is named.
    partial = tmp_path / "partial.csv"
    table = pd.read_csv(results_csv)
    table[~((table["num_train"] == 20) & (table["lr"] == 0.1))].to_csv(partial, index=False)
    before = _snapshot(tmp_path)
    code = main(["table", str(partial), "--where", "num_train=20", "--where", "lr=0.1"])
    _assert_refused(
        code,
        capsys,
        before,
        tmp_path,
        mentions=r"--where lr=0\.1 selects no rows of .*partial\.csv with "
        r"num_train = 20",
    )


def test_table_and_plot_read_a_stopped_grid_from_its_store_and_say_how_much(tmp_path, tiny_spec, capsys, monkeypatch):
    """The output was never written (the grid stopped after some chunks): table and plot read
    the finished runs from OUT.store/ and say how many of how many they hold."""
    monkeypatch.setenv("COLUMNS", "300")
    out = tmp_path / "tiny.csv"
    assert main(["run", str(tiny_spec), "--out", str(out), "--quiet", "--jobs", "1", "--chunk-size", "1"]) == 0
    out.unlink()
    segments = sorted(tmp_path.joinpath("tiny.csv.store").glob("*.runs"))
    segments[0].unlink()
    assert main(["table", str(out), "--by", "lr"]) == 0
    said = capsys.readouterr().out
    assert re.search(
        r"^\d+ of 8 runs, read from .*tiny\.csv\.store \(the grid was stopped before it finished\)$",
        said.splitlines()[0],
    ), said
    assert main(["plot", str(out), "--x", "num_train", "--hue", "lr", "--out", str(tmp_path / "f.png")]) == 0
    assert "runs, read from" in capsys.readouterr().out and (tmp_path / "f.png").is_file()


# study table --------------------------------------------------------------------------------------


def test_table_prints_counts_and_medians(results_csv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["table", str(results_csv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "every checkpoint (epochs 0, 1, 2); cells by num_train, lr, epoch; nothing pooled"
    assert lines[1].startswith("count: runs; SGD's medians leave out the diverged runs; least squares")
    header = lines[2].split()
    assert header[:6] == ["num_train", "lr", "epoch", "count", "diverged", "streams"]
    assert "w_err_norm_median" in header and "ols_w_err_norm_median" in header
    assert "w_err_norm_mean" not in header  # the printed table keeps medians only
    # default cells: the axes that vary (num_train, lr) and epoch: 2 x 2 x 3 rows under a header
    assert len(lines) == 3 + 2 * 2 * TINY_CHECKPOINTS


def test_table_precision_prints_medians_with_intervals_and_values_with_mcse(tmp_path, tiny_spec, capsys, monkeypatch):
    """Six replicates a cell: each median gets its distribution-free interval, the RMSE and the
    relative efficiencies their MCSE; --out keeps every column."""
    import pandas as pd

    monkeypatch.setenv("COLUMNS", "400")
    spec = tmp_path / "six.toml"
    spec.write_text(TINY_SPEC.replace("replicates = 2", "replicates = 6"), encoding="utf-8")
    out = tmp_path / "six.csv"
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    assert main(["table", str(out), "--by", "num_train,lr", "--precision", "--out", str(tmp_path / "p.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["num_train", "lr"])
    assert "units" in header and "w_err_norm_rmse" in header and "w_err_norm_releff" in header
    row = lines[lines.index(header) + 1]
    assert re.search(r"\d\S* \[\S+, \S+\]", row) and re.search(r"\d\S* ± \S+", row), row
    written = pd.read_csv(tmp_path / "p.csv")
    for column in ("units", "w_err_0_bias", "w_err_0_bias_mcse", "w_err_norm_median_lo", "b_err_releff_mcse"):
        assert column in written.columns
    assert (written["w_err_norm_median_lo"] <= written["w_err_norm_median"]).all()
    assert (written["w_err_norm_median"] <= written["w_err_norm_median_hi"]).all()


def test_compare_says_how_it_paired_and_writes_its_table(tmp_path, results_csv, capsys, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("COLUMNS", "300")
    out = tmp_path / "c.csv"
    assert main(["compare", str(results_csv), "--factor", "lr", "--baseline", "0.03", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("epoch 2 (the last checkpoint); w_err_norm of each lr against lr = 0.03, paired by data stream")
    written = pd.read_csv(out)
    assert list(written["lr"]) == [0.1, 0.1] and list(written["num_train"]) == [20, 50]
    assert written["paired"].all() and (written["streams"] == 2).all()
    assert main(["compare", str(results_csv), "--factor", "num_train", "--baseline", "20"]) == 0
    assert "unpaired: num_train changes the data" in capsys.readouterr().out
    before = _snapshot(tmp_path)
    code = main(["compare", str(results_csv), "--factor", "lr", "--baseline", "0.3", "--out", str(tmp_path / "d.csv")])
    _assert_refused(
        code,
        capsys,
        before,
        tmp_path,
        mentions=r"The '--baseline' option must be one of the values lr "
        r"takes \(0\.03, 0\.1\)\. Got '0\.3' instead\.",
    )


def test_run_grows_replicates_to_a_target_precision(tmp_path, tiny_spec, capsys):
    """From 2 replicates, rounds until every cell's median is within ±40% (95% interval), each
    round training only the replicates it adds; --dry-run then predicts from the runs held."""
    import pandas as pd

    from study.summaries import precision_shortfall

    out = tmp_path / "tiny.csv"
    code = main(
        [
            "run",
            str(tiny_spec),
            "--out",
            str(out),
            "--quiet",
            "--jobs",
            "1",
            "--target-precision",
            "0.4",
            "--max-replicates",
            "60",
        ]
    )
    said = capsys.readouterr().out.splitlines()
    assert code == 0 and said[0].startswith("round 1: 4 of 4 cells short of ±0.4 (worst ±inf, at num_train = ")
    assert "growing from 2 to" in said[0] and said[-1].startswith("target reached: the median of w_err_norm is within")
    replicates = int(pd.read_csv(out)["replicate"].max()) + 1
    cells = precision_shortfall(out, target=0.4)
    assert (cells["relative"] <= 0.4).all() and 6 <= replicates <= 60
    assert f"with {replicates} replicates" in said[-1]
    assert main(["run", str(tiny_spec), "--out", str(out), "--dry-run", "--target-precision", "0.1"]) == 0
    assert "replicates for ±0.1 in every cell" in capsys.readouterr().out.splitlines()[-1]
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--out", str(tmp_path / "x.csv"), "--target-precision", "5"])
    _assert_refused(
        code,
        capsys,
        before,
        tmp_path,
        mentions=r"argument --target-precision: expected a fraction between "
        r"0 and 1, e\.g\. 0\.05, got '5'",
    )


def test_table_fits_the_terminal_and_names_the_columns_it_leaves_out(results_csv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "72")
    assert main(["table", str(results_csv), "--by", "lr"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 72 for line in lines)
    assert " ".join(lines[:2]) == "epoch 2 (the last checkpoint); cells by lr; pooled over num_train (20, 50)"
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["lr"])
    assert lines[header].split() == ["lr", "epoch", "count", "diverged", "streams", "w_err_norm_median"]
    note = " ".join(lines[header + 3 :])
    assert note == (
        "(5 columns left out to fit 72 characters: ols_w_err_norm_median, b_err_abs_median, "
        "gap_w_norm_median, ols_b_err_abs_median, val_mse_median; --out FILE writes every column)"
    )


def test_table_epoch_and_where_choose_the_rows(results_csv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["table", str(results_csv), "--by", "num_train", "--epoch", "1", "--where", "lr=0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "epoch 1; cells by num_train; where lr = 0.1; nothing pooled"
    rows = [line.split() for line in lines[3:]]
    assert [r[:4] for r in rows] == [["20", "1", "2", "0"], ["50", "1", "2", "0"]]
    df = pd.read_csv(results_csv)
    expected = df[(df["epoch"] == 1) & (df["lr"] == 0.1)].groupby("num_train")["w_err_norm"].median()
    assert [float(r[5]) for r in rows] == pytest.approx(expected.tolist(), rel=1e-2)


def test_table_diverged_lists_the_runs_and_their_cells(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    spec = tmp_path / "div.toml"
    spec.write_text("[grid]\nnum_train = [50]\nlr = [0.1, 3.0]\nepoch = [1, 3]\nreplicates = 2\nnum_val = 20\n")
    assert main(["run", str(spec), "--out", str(tmp_path / "d.csv"), "--quiet", "--jobs", "1"]) == 0
    assert main(["table", str(tmp_path / "d.csv"), "--diverged", "--out", str(tmp_path / "div.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 of 4 runs diverged by each run's last checkpoint"
    assert lines[1].split()[:3] == ["num_train", "num_inputs", "lr"] and lines[1].split()[-3:] == [
        "replicate",
        "seed",
        "diverged_at",
    ]
    listed = pd.read_csv(tmp_path / "div.csv")
    assert listed["lr"].tolist() == [3.0, 3.0] and listed["replicate"].tolist() == [0, 1]
    assert set(listed["diverged_at"]) <= {1, 3} and lines[-1] == f"wrote {tmp_path / 'div.csv'}"
    assert main(["table", str(tmp_path / "d.csv"), "--diverged", "--where", "lr=0.1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "0 of 2 runs diverged by each run's last checkpoint; where lr = 0.1"
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epoch", "7"], "The '--epoch' option must be one of the table's checkpoints (0, 1, 2). Got 7 instead."),
        (["--epoch", "x"], "argument --epoch: invalid int value: 'x'"),
        (
            ["--where", "lr"],
            "The '--where' option must be KEY=VALUE, e.g. loss=huber or lr=0.01,0.03. Got 'lr' instead.",
        ),
        (
            ["--where", "rate=0.1"],
            "The '--where' option must be KEY=VALUE with KEY one of the table's axes (num_train, num_inputs, lr,",
        ),
        (
            ["--where", "lr=0.5"],
            "The '--where' option must be one of the values lr takes in the table (lr=0.03, 0.1). "
            "Got 'lr=0.5' instead.",
        ),
        (["--where", "lr=0.1", "--where", "lr=0.03"], "given once for each axis (lr is given twice)"),
        (["--by", ","], "The '--by' option must be column names separated by commas. Got ',' instead."),
        (
            ["--diverged", "--by", "lr"],
            "The '--by' option must be column names separated by commas, and left out with --diverged",
        ),
        (
            ["--out", "a/b/s.csv"],
            "The '--out' option must be a path in an existing folder, or in one new folder inside "
            "an existing one (neither 'a/b' nor 'a' exists). Got 'a/b/s.csv' instead.",
        ),
        (["--out", "s.parquet", "--where", "loss=huber"], "(loss=squared). Got 'loss=huber' instead."),
    ],
)
def test_table_refusals_name_the_flag(tmp_path, results_csv, capsys, args, message):
    before = _snapshot(tmp_path)
    code = main(["table", str(results_csv), *args])
    line = _assert_refused(code, capsys, before, tmp_path, mentions=re.escape(message))
    assert "run_grid" not in line and "parameter" not in line


def test_every_command_creates_one_missing_folder_and_says_so(tmp_path, results_csv, capsys):
    """The folder rule: a typed path may lie one new folder inside an existing one; that folder
    is created and named on stderr; the layout of a default output is created likewise."""
    assert main(["table", str(results_csv), "--out", "new/s.parquet"]) == 0
    assert (tmp_path / "new" / "s.parquet").is_file()
    assert capsys.readouterr().err == "study: created folder new\n"
    assert main(["plot", str(results_csv), "--x", "num_train", "--hue", "lr", "--out", "fig/a.pdf"]) == 0
    assert capsys.readouterr().err == "study: created folder fig\n" and (tmp_path / "fig" / "a.pdf").is_file()
    assert main(["plot", str(results_csv), "--x", "num_train", "--hue", "lr"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "study: created folder figures\n"
    assert captured.out == "wrote figures/tiny_w_err_norm-vs-num_train.png\n"
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["tiny_w_err_norm-vs-num_train.png"]  # no SVG beside
    before = _snapshot(tmp_path)
    code = main(["exercises", "--only", "3", "--out-dir", "x/y"])
    _assert_refused(
        code,
        capsys,
        before,
        tmp_path,
        mentions=re.escape(
            "The '--out-dir' option must be a path in an "
            "existing folder, or in one new folder inside an existing one (neither 'x/y' nor 'x' exists)"
        ),
    )


def test_table_out_writes_one_row_per_cell(tmp_path, results_csv, capsys):
    out = tmp_path / "summary.csv"
    assert main(["table", str(results_csv), "--out", str(out)]) == 0
    summary = pd.read_csv(out)
    assert len(summary) == 2 * 2 * TINY_CHECKPOINTS
    assert not summary.duplicated(["num_train", "lr", "epoch"]).any()
    assert (summary["count"] == 2).all()  # the replicates
    assert {"w_err_norm_mean", "w_err_norm_median", "w_err_norm_q10", "w_err_norm_q90"} <= set(summary.columns)


def test_table_by_lr_gives_one_row_per_lr(tmp_path, results_csv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    out = tmp_path / "by_lr.csv"
    assert main(["table", str(results_csv), "--by", "lr", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert len(stdout.strip().splitlines()) == 2 + 1 + 2 + 1  # what it shows, a header, 2 rows, what it wrote
    summary = pd.read_csv(out)
    assert summary["lr"].tolist() == [0.03, 0.1]
    # without epoch among the cells each run counts once, at its last checkpoint
    assert (summary["count"] == 2 * 2).all()


# python -m study, as a process ------------------------------------------------------------------


def test_python_m_study_bad_spec_exits_2_with_one_line(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text("[grid]\nnum_train = [-5]\n", encoding="utf-8")
    before = _snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(study.__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "study", "run", "bad.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "'num_train'" in lines[0] and "Got -5" in lines[0]
    assert _snapshot(tmp_path) == before


def test_python_m_study_help_exits_0(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(study.__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "study", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout and "table" in done.stdout


def test_exercises_quick_one_study_writes_its_files_and_plot_redraws_them(tmp_path, capsys):
    assert (
        main(
            [
                "exercises",
                "--quick",
                "--only",
                "4",
                "--out-dir",
                str(tmp_path / "q"),
                "--jobs",
                "1",
                "--formats",
                "png,svg",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "exercise 4:" in out and "answers.md" in out
    for name in (
        "results/ex4_lr_epochs.csv",
        "figures/ex4_lr_epochs.png",
        "figures/ex4_lr_epochs.svg",
        "results/answers.md",
    ):
        assert (tmp_path / "q" / name).is_file(), name
        assert str(tmp_path / "q" / name) in out  # the paths it wrote, as it wrote them
    raw = tmp_path / "q" / "results" / "raw" / "ex4_lr_epochs.parquet"
    assert main(["plot", str(raw), "--figure", "heatmap", "--out", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").stat().st_size > 1000 and not (tmp_path / "h.svg").exists()
    assert main(["plot", str(raw), "--figure", "error-vs-epoch"]) == 0
    assert (tmp_path / "figures" / "ex4_lr_epochs_error-vs-epoch.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["exercises", "--only", "9"], "The '--only' option must be among [1, 2, 3, 4, 5, 6, 7]. Got 9 instead."),
        (["exercises", "--only", "8,1"], "The '--only' option must be among [1, 2, 3, 4, 5, 6, 7]. Got 8 instead."),
        (
            ["exercises", "--only", "one"],
            "The '--only' option must be exercise numbers separated by commas (e.g. 1,5).",
        ),
        (["plot", "missing.csv", "--figure", "heatmap"], "No results file at 'missing.csv'"),
        (["plot", "RESULTS", "--figure", "pie"], "The '--figure' option must be one of ['error-vs-num_train'"),
        (
            ["plot", "RESULTS", "--figure", "heatmap", "--out", "h.jpg"],
            "The '--out' option must be a path ending in .png, .svg or .pdf. Got 'h.jpg' instead.",
        ),
        (
            ["plot", "RESULTS", "--figure", "heatmap", "--y", "nope"],
            "The '--y' option must be a measured column of the table",
        ),
        (
            ["plot", "RESULTS", "--x", "num_train", "--hue", "foo"],
            "The '--hue' option must be one column of the table (its axes: num_train, num_inputs, lr, epoch,",
        ),
        (["plot", "RESULTS", "--x", "num_train", "--hue", "lr,loss"], "Got 'lr,loss' instead."),
        (
            ["plot", "RESULTS", "--x", "num_train", "--col", "replicate", "--hue", "lr"],
            "The '--col' option must be one column",
        ),
        (
            ["plot", "RESULTS", "--x", "num_train"],
            "the table varies in lr (0.03, 0.1); put them on the figure "
            "(--hue/--style/--col/--row) or fix them (--where lr=0.03)",
        ),
        (["plot", "RESULTS", "--x", "epoch", "--hue", "lr"], "the table varies in num_train (20, 50); put them"),
        (
            ["plot", "RESULTS", "--x", "num_train", "--y", "loss", "--hue", "lr"],
            "The '--y' option must be a measured column of the table (w_hat_0, w_err_0,",
        ),
        (
            ["plot", "RESULTS", "--x", "num_train", "--hue", "lr", "--epoch", "9"],
            "The '--epoch' option must be one of the table's checkpoints (0, 1, 2)",
        ),
        (
            ["plot", "RESULTS", "--x", "num_train", "--hue", "lr", "--where", "loss=huber"],
            "The '--where' option must be one of the values loss takes in the table (loss=squared).",
        ),
        (
            ["plot", "RESULTS", "--x", "num_train", "--figure", "heatmap"],
            "argument --figure: not allowed with argument --x",
        ),
        (["plot", "RESULTS"], "The '--figure' or '--x' option must be given"),
        (
            ["plot", "RESULTS", "--figure", "ex4_lr_epochs", "--hue", "lr"],
            "The '--hue' option must be left out with the exercise figure ex4_lr_epochs",
        ),
        (
            ["plot", "RESULTS", "--figure", "ex2_huber"],
            "The '--figure' option must be a figure the table can draw (ex2_huber needs loss = squared, huber;",
        ),
        (
            ["plot", "RESULTS", "--figure", "heatmap", "--hue", "num_train"],
            "The '--hue' option must be left out with the heatmap",
        ),
        (
            ["plot", "RESULTS", "--figure", "ex4_lr_epochs", "--title", "mine"],
            "The '--title' option must be left out with the exercise figure",
        ),
        (
            ["plot", "RESULTS", "--figure", "ex4_lr_epochs", "--band", "spread"],
            "The '--band' option must be left out with the exercise figure ex4_lr_epochs",
        ),
        (
            ["plot", "RESULTS", "--x", "num_train", "--hue", "lr", "--band", "iqr"],
            "argument --band: invalid choice: 'iqr'",
        ),
        (
            ["plot", "RESULTS", "--figure", "nested-loop", "--order", "lr"],
            "the table varies in num_train (20, 50); add them to --order or fix them (--where num_train=20)",
        ),
        (
            ["plot", "RESULTS", "--figure", "nested-loop", "--order", "lr,foo"],
            "The '--order' option must be axes that "
            "vary in the table (num_train, lr, epoch), "
            "each once, outermost first. Got 'foo'",
        ),
        (
            ["plot", "RESULTS", "--figure", "nested-loop", "--hue", "lr"],
            "The '--hue' option must be left out with the nested-loop figure",
        ),
        (
            ["plot", "RESULTS", "--figure", "heatmap", "--order", "lr,num_train"],
            "The '--order' option must be left out "
            "with the figure heatmap (only --figure "
            "nested-loop takes it). Got 'lr,num_train'",
        ),
        (
            ["plot", "RESULTS", "--x", "num_train", "--hue", "lr", "--order", "lr"],
            "The '--order' option must be left out with --x",
        ),
    ],
)
def test_exercises_and_plot_refuse_bad_input_with_one_line(tmp_path, results_csv, capsys, args, message):
    args = [str(results_csv) if a == "RESULTS" else a for a in args]
    before = _snapshot(tmp_path)
    _assert_refused(main(args), capsys, before, tmp_path, mentions=re.escape(message))


def test_plot_nested_loop_draws_every_cell_in_the_order_given(tmp_path, results_csv, capsys):
    out = tmp_path / "nl.png"
    assert (
        main(
            [
                "plot",
                str(results_csv),
                "--figure",
                "nested-loop",
                "--order",
                "lr,num_train,epoch",
                "--band",
                "spread",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 1000
    assert main(["plot", str(results_csv), "--figure", "nested-loop", "--where", "lr=0.1", "--epoch", "1"]) == 0
    assert (tmp_path / "figures" / "tiny_nested-loop.png").is_file()  # by default, with the other figures


def test_help_and_a_refused_spec_import_neither_torch_nor_pandas(tmp_path):
    """What makes them answer at once: the CLI imports torch, pandas and matplotlib only in the
    commands that need them, after the spec is accepted."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nlr = 0\n")
    probe = (
        "import sys\n"
        "from study.cli import main\n"
        f"assert main(['--help']) == 0 and main(['run', {str(bad)!r}]) == 2\n"
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "must be a finite number > 0. Got 0" in done.stderr


def test_the_package_lists_its_lazy_names():
    import study

    assert {"run_grid", "summarize", "Grid", "SyntheticRegressionData"} <= set(dir(study))
    assert study.summarize is __import__("study.summaries", fromlist=["summarize"]).summarize


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, tiny_spec, capsys):
    before = _snapshot(tmp_path)
    assert main(["run", str(tiny_spec), "--out", str(tmp_path / "deep" / "x.csv"), "--jobs", "1", "--dry-run"]) == 0
    captured = capsys.readouterr()
    size = TINY_RUNS * TINY_CHECKPOINTS * 13 * 34 / 1000  # kB: 13 bytes for each of 34 columns
    assert re.fullmatch(
        rf"tiny: {TINY_RUNS} runs, {TINY_RUNS * TINY_CHECKPOINTS} rows in \d+ chunks on cpu, 1 worker; "
        rf"about 1 s; the CSV about {size:.1f} kB\n",
        captured.out,
    ), captured.out
    assert captured.err == "" and _snapshot(tmp_path) == before


def test_dry_run_refuses_a_bad_device_like_a_run(tmp_path, tiny_spec, capsys):
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--dry-run", "--device", "tpu"])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"'--device' option.*'tpu'")


def test_a_run_says_what_it_will_do_before_it_starts(tmp_path, tiny_spec, capsys):
    assert main(["run", str(tiny_spec), "--out", str(tmp_path / "x.csv"), "--jobs", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert (
        first.startswith(f"tiny: {TINY_RUNS} runs, {TINY_RUNS * TINY_CHECKPOINTS} rows in ")
        and "the CSV about" in first
    )


def test_run_table_and_plot_take_parquet(tmp_path, tiny_spec, capsys):
    out = tmp_path / "t.parquet"
    assert main(["run", str(tiny_spec), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    assert out.is_file() and (tmp_path / "t.meta.json").is_file()
    assert main(["table", str(out), "--out", str(tmp_path / "s.parquet")]) == 0
    assert "w_err_norm_median" in capsys.readouterr().out
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "s.parquet")) > 0
    assert main(["plot", str(out), "--figure", "error-vs-num_train", "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").is_file()


def test_run_refuses_an_output_that_is_neither_csv_nor_parquet(tmp_path, tiny_spec, capsys):
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--out", str(tmp_path / "x.txt")])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"'--out' option.*\.csv or \.parquet.*x\.txt")


def test_a_control_character_in_an_argument_is_refused_in_one_line(capsys):
    """argparse echoes unrecognized arguments; a stray carriage return must not split the line
    (found by the hypothesis fuzzing in test_reliability)."""
    assert main(["demo", "\r"]) == 2
    err = capsys.readouterr().err
    assert err == "study: unrecognized arguments: \\r (see 'study --help')\n", err


# study plot and study table, fuzzed ------------------------------------------------------------------

_WHERE = [
    "lr=0.1",
    "lr=0.03,0.1",
    "lr=5",
    "num_train=20",
    "num_train=2e1",
    "loss=huber",
    "loss=squared",
    "lr",
    "=",
    "epoch=1",
    "x=1",
    "lr=",
    "seed=1",
]
_EPOCHS = ["0", "1", "2", "7", "-1", "x", "1.5"]
_COLUMNS = ["lr", "num_train", "epoch", "loss", "lr,loss", "foo", "replicate", "seed", ""]
_PLOT_OPTIONS = {
    "--figure": [
        "heatmap",
        "error-vs-num_train",
        "error-vs-epoch",
        "error-vs-lr",
        "ex4_lr_epochs",
        "ex1_reduction",
        "nested-loop",
        "pie",
        "",
    ],
    "--order": ["lr,num_train", "num_train,lr,epoch", "lr", "lr,lr", "foo", ""],
    "--x": ["num_train", "lr", "epoch", "loss", "foo", "replicate", "w_err_norm", ""],
    "--y": ["w_err_norm", "b_err", "ols_w_err_norm", "gap_w_norm", "loss", "nope", "diverged"],
    "--hue": _COLUMNS,
    "--style": _COLUMNS,
    "--col": _COLUMNS,
    "--row": _COLUMNS,
    "--where": _WHERE,
    "--epoch": _EPOCHS,
    "--out": ["f.png", "f.pdf", "f.svg", "f.jpg", "sub/f.png", "a/b/f.png", ".", "/proc/nope/f.png", "tiny.csv/f.png"],
}
_TABLE_OPTIONS = {
    "--by": ["lr", "num_train,lr", "epoch", "nope", ",", "loss,replicate"],
    "--epoch": _EPOCHS,
    "--where": _WHERE,
    "--diverged": None,
    "--out": ["s.csv", "s.parquet", "s.txt", "sub/s.csv", "a/b/s.csv", ".", "tiny.csv"],
}


@st.composite
def _plot_or_table_argv(draw) -> list[str]:
    command = draw(st.sampled_from(["plot", "plot", "table"]))
    argv = [command, draw(st.sampled_from(["tiny.csv", "tiny.csv", "tiny.csv", "missing.csv", ".", "spec.toml"]))]
    options = _PLOT_OPTIONS if command == "plot" else _TABLE_OPTIONS
    if command == "plot":  # a figure the table can draw, often, so that the flags after it are what is tried
        argv += draw(
            st.sampled_from(
                [
                    [],
                    ["--x", "num_train", "--hue", "lr"],
                    ["--figure", "error-vs-epoch"],
                    ["--x", "lr", "--hue", "num_train", "--col", "epoch"],
                    ["--figure", "heatmap"],
                    ["--figure", "nested-loop"],
                ]
            )
        )
    from conftest import with_drawn_options

    return with_drawn_options(draw, argv, options, unique=False)  # repeats too: --where twice


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(argv=_plot_or_table_argv())
def test_plot_and_table_never_show_a_traceback(tmp_path_factory, results_csv, argv):
    """Whatever the flags: exit 0, or exit 2 with one line on stderr and nothing written."""
    import shutil

    from conftest import run_cli_in

    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copy(results_csv, folder / "tiny.csv")
    (folder / "spec.toml").write_text(TINY_SPEC, encoding="utf-8")
    before = _snapshot(folder)
    code, out, err = run_cli_in(folder, argv)
    assert "Traceback" not in out + err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("study"), (argv, err)
        assert _snapshot(folder) == before, argv


def test_plot_refuses_a_role_no_table_could_hold_before_reading_the_table(tmp_path, capsys):
    """Roles are checked against the schema's own names first (no table read, no heavy import);
    those names are the axes and the measured columns metric_columns writes, but diverged."""
    import numpy as np

    from study.cli import _SCHEMA_COLUMN
    from study.engine import ChunkResult
    from study.schema import metric_columns

    R, C, d = 2, 3, 4
    result = ChunkResult(
        w_hat=np.zeros((R, C, d), np.float32),
        b_hat=np.zeros((R, C)),
        train_loss=np.ones((R, C)),
        val_mse=np.zeros((R, C)),
        grad_w=np.zeros((R, C, d)),
        grad_b=np.zeros((R, C)),
        steps=np.arange(C),
        ols_w=np.zeros((R, d)),
        ols_b=np.zeros(R),
        w_true=np.zeros(d, np.float32),
        b_true=0.0,
    )
    measured = [c for c in metric_columns(result, C) if _SCHEMA_COLUMN.fullmatch(c)]
    assert measured == [c for c in metric_columns(result, C) if c != "diverged"]
    missing = tmp_path / "no-such-table.csv"  # never read: the role is refused first
    assert main(["plot", str(missing), "--x", "num_train", "--hue", "lr,loss", "--out", str(tmp_path / "f.png")]) == 2
    assert "The '--hue' option must be one column of the table" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_goes_away_ends_the_command_quietly(results_csv):
    """`study table x.csv | head -1`: no 'failed: BrokenPipeError' line, the status of SIGPIPE.
    Here the reader is gone before the first line (the read end of the pipe is closed)."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "study", "table", str(results_csv)], stdout=write, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr.decode()) == (141, "")


def test_run_without_out_picks_parquet_for_a_big_table_and_says_so(tmp_path, capsys, monkeypatch):
    import study.cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(study.cli, "CSV_MAX_ROWS", 10)  # a table of more rows than this is "big"
    spec = tmp_path / "g.toml"
    spec.write_text("[grid]\nnum_train = 20\nlr = [0.01, 0.1]\nepoch = [1, 2]\nreplicates = 3\nnum_val = 20\n")
    assert main(["run", str(spec), "--dry-run", "--jobs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("g: 6 runs, 18 rows in") and "; the Parquet file about " in out[0]
    assert out[1] == "writing Parquet: 18 rows are too many for a CSV (--out NAME.csv to have one anyway)"
    assert main(["run", str(spec), "--jobs", "1", "--quiet"]) == 0
    assert (tmp_path / "results" / "raw" / "g.parquet").is_file() and not (
        tmp_path / "results" / "raw" / "g.csv"
    ).exists()


def test_a_default_output_that_cannot_be_written_is_named_as_the_default(tmp_path, tiny_spec, capsys):
    """No --out given: the refusal names the command's own path, says no --out was given, and
    writes nothing."""
    (tmp_path / "results").write_text("a file where the default folder goes")
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--quiet", "--jobs", "1"])
    _assert_refused(
        code,
        capsys,
        before,
        tmp_path,
        mentions=r"^study: error: The default output 'results/raw/tiny\.csv' \(no --out given\) must be a "
        r"path in a folder \('results' is a file\); give --out elsewhere\.$",
    )
