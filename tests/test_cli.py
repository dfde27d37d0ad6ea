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
    _assert_refused(code, capsys, before, tmp_path, mentions=r"'by'.*nosuchcolumn")


def test_table_out_not_csv_exits_2(tmp_path, results_csv, capsys):
    before = _snapshot(tmp_path)
    code = main(["table", str(results_csv), "--out", str(tmp_path / "summary.xlsx")])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"'out'.*\.csv")


# study table --------------------------------------------------------------------------------------


def test_table_prints_counts_and_medians(results_csv, capsys):
    assert main(["table", str(results_csv)]) == 0
    stdout = capsys.readouterr().out
    header = stdout.splitlines()[0].split()
    assert "count" in header
    assert "w_err_norm_median" in header
    assert "w_err_norm_mean" not in header  # the printed table keeps medians only
    # default cells: the axes that vary (num_train, lr) and epoch: 2 x 2 x 3 rows under a header
    assert len(stdout.strip().splitlines()) == 1 + 2 * 2 * TINY_CHECKPOINTS


def test_table_out_writes_one_row_per_cell(tmp_path, results_csv, capsys):
    out = tmp_path / "summary.csv"
    assert main(["table", str(results_csv), "--out", str(out)]) == 0
    summary = pd.read_csv(out)
    assert len(summary) == 2 * 2 * TINY_CHECKPOINTS
    assert not summary.duplicated(["num_train", "lr", "epoch"]).any()
    assert (summary["count"] == 2).all()  # the replicates
    assert {"w_err_norm_mean", "w_err_norm_median", "w_err_norm_q10", "w_err_norm_q90"} <= set(summary.columns)


def test_table_by_lr_gives_one_row_per_lr(tmp_path, results_csv, capsys):
    out = tmp_path / "by_lr.csv"
    assert main(["table", str(results_csv), "--by", "lr", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert len(stdout.strip().splitlines()) == 1 + 2
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
    done = subprocess.run([sys.executable, "-m", "study", "run", "bad.toml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "'num_train'" in lines[0] and "Got -5" in lines[0]
    assert _snapshot(tmp_path) == before


def test_python_m_study_help_exits_0(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(study.__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-m", "study", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout and "table" in done.stdout


def test_exercises_quick_one_study_writes_its_files_and_plot_redraws_them(tmp_path, capsys):
    assert main(["exercises", "--quick", "--only", "4", "--out-dir", str(tmp_path / "q"), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "exercise 4:" in out and "answers.md" in out
    for name in ("results/ex4_lr_epochs.csv", "figures/ex4_lr_epochs.png", "figures/ex4_lr_epochs.svg",
                 "results/answers.md"):
        assert (tmp_path / "q" / name).is_file(), name
    raw = tmp_path / "q" / "results" / "raw" / "ex4_lr_epochs.csv"
    assert main(["plot", str(raw), "--figure", "heatmap", "--out", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").stat().st_size > 1000 and (tmp_path / "h.svg").is_file()
    assert main(["plot", str(raw), "--figure", "error-vs-epoch"]) == 0
    assert (tmp_path / "figures" / "ex4_lr_epochs_error-vs-epoch.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["exercises", "--only", "9"], "The 'numbers' parameter of run_exercises must be among [1, 2, 3, 4, 5]. Got [9]"),
        (["exercises", "--only", "one"], "The '--only' option must be comma-separated numbers"),
        (["plot", "missing.csv", "--figure", "heatmap"], "No results file at 'missing.csv'"),
        (["plot", "RESULTS", "--figure", "pie"], "The '--figure' option must be one of ['error-vs-num_train'"),
        (["plot", "RESULTS", "--figure", "heatmap", "--out", "h.jpg"], "The '--out' option must be a path ending in .png"),
        (["plot", "RESULTS", "--figure", "heatmap", "--y", "nope"], "The 'y' parameter of draw_figure must be a column"),
    ],
)
def test_exercises_and_plot_refuse_bad_input_with_one_line(tmp_path, results_csv, capsys, args, message):
    args = [str(results_csv) if a == "RESULTS" else a for a in args]
    before = _snapshot(tmp_path)
    _assert_refused(main(args), capsys, before, tmp_path, mentions=re.escape(message))


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
    assert study.summarize is __import__("study.results", fromlist=["summarize"]).summarize


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, tiny_spec, capsys):
    before = _snapshot(tmp_path)
    assert main(["run", str(tiny_spec), "--out", str(tmp_path / "deep" / "x.csv"), "--jobs", "1", "--dry-run"]) == 0
    captured = capsys.readouterr()
    size = TINY_RUNS * TINY_CHECKPOINTS * 13 * 27 / 1000  # kB: 13 bytes for each of 27 columns
    assert re.fullmatch(rf"tiny: {TINY_RUNS} runs, {TINY_RUNS * TINY_CHECKPOINTS} rows in \d+ chunks on cpu, 1 worker; "
                        rf"about 1 s; the CSV about {size:.1f} kB\n", captured.out), captured.out
    assert captured.err == "" and _snapshot(tmp_path) == before


def test_dry_run_refuses_a_bad_device_like_a_run(tmp_path, tiny_spec, capsys):
    before = _snapshot(tmp_path)
    code = main(["run", str(tiny_spec), "--dry-run", "--device", "tpu"])
    _assert_refused(code, capsys, before, tmp_path, mentions=r"'--device' option.*'tpu'")


def test_a_run_says_what_it_will_do_before_it_starts(tmp_path, tiny_spec, capsys):
    assert main(["run", str(tiny_spec), "--out", str(tmp_path / "x.csv"), "--jobs", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"tiny: {TINY_RUNS} runs, {TINY_RUNS * TINY_CHECKPOINTS} rows in ") and "the CSV about" in first


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
