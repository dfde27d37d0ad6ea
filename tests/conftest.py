from __future__ import annotations

import os
import tempfile

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# The machine's pace (study.pace) is the tests' own, never the user's cache: a folder for the
# session's fixtures, and one per test (below), so that no estimate depends on what ran before.
os.environ["STUDY_CACHE_DIR"] = tempfile.mkdtemp(prefix="study-cache-")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _one_thread_and_closed_figures():
    """Tests run with one torch thread (as the workers do) and leave no figure open."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    import matplotlib.pyplot as plt

    plt.close("all")


def run_cli_in(folder, argv) -> tuple[int, str, str]:
    """study's main(argv) run in ``folder``, its stdout and stderr captured: (status, out, err)."""
    import contextlib
    import io
    import os

    from study.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(argv)
    finally:
        os.chdir(here)
    return code, stdout.getvalue(), stderr.getvalue()


def with_drawn_options(draw, argv: list, options: dict, *, unique: bool) -> list:
    """argv, then up to 4 of ``options`` (flag -> its values to draw from, or None for a switch),
    and one time in ten a stray piece of text somewhere: what the CLI fuzz tests feed main."""
    from hypothesis import strategies as st

    for option in draw(st.lists(st.sampled_from(sorted(options)), max_size=4, unique=unique)) if options else []:
        argv.append(option)
        if options[option] is not None:
            argv.append(draw(st.sampled_from(options[option])))
    if draw(st.integers(0, 9)) == 0:
        argv.insert(draw(st.integers(0, len(argv))), draw(st.text(max_size=6)))
    return argv


@pytest.fixture(scope="session")
def quick(tmp_path_factory):
    """Every study on its quick grid, once for the session: (the folder written, the outcomes)."""
    from study.exercises import run_exercises

    out = tmp_path_factory.mktemp("quick")
    outcomes = run_exercises(quick=True, out_dir=out, n_jobs=1, progress=False, log=lambda _: None)
    return out, outcomes


@pytest.fixture(scope="session")
def small_table():
    """A small grid, run: 2 sizes × 2 lrs × 2 epochs × 5 replicates."""
    from study.grid import Grid
    from study.runner import run_grid

    grid = Grid(num_train=[10, 100], lr=[0.03, 0.1], epoch=[1, 2], replicates=5, num_val=20)
    return run_grid(grid, n_jobs=1, progress=False)
