from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


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
