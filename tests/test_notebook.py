"""notebooks/walkthrough.ipynb: stored without outputs, and executed from top to bottom in a fresh
kernel of this interpreter, in an empty working directory.

The notebook checks its own claims with ``assert`` on the data it measures (a failed one fails its
cell, and so this test); here we check that every cell ran, that it showed and wrote its figures, that
it wrote nothing outside the folder it was given, and that a number it prints is the one its table
gives when recomputed here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from study.analysis import read_results
from study.fits import fit_power_law

# The dev extra's (`make test` installs it): a machine without it, such as the GPU image, skips
# this file rather than failing its collection.
nbformat = pytest.importorskip("nbformat")
NotebookClient = pytest.importorskip("nbclient").NotebookClient
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402 (nbclient's own dependencies)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from jupyter_core.utils import run_sync  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
#: The figures the notebook shows and saves, one ``show(fig, NAME)`` each.
FIGURES = (
    "ex5_w_err.png",
    "ex5_b_err.png",
    "ex4_heatmap.png",
    "ex4_epochs.png",
    "theory.png",
    "ex2_losses.png",
    "ex2_huber.png",
)
#: A cell added to the executed copy only: which Python the kernel runs.
PROBE = "import sys; print('kernel prefix:', sys.prefix)"


def _stdout(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream" and o.name == "stdout"
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run once: (the executed notebook, its output folder, its working directory, seconds)."""
    cwd, out, kernels = (tmp_path_factory.mktemp(name) for name in ("cwd", "out", "kernels"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    # A kernel of this very interpreter (the .venv's, which imports this checkout's study), named in a
    # kernel spec of our own: a "python3" spec elsewhere on the Jupyter path (a user's) may name another.
    (kernels / "walkthrough").mkdir()
    (kernels / "walkthrough" / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "walkthrough test",
                "language": "python",
            }
        )
    )
    km = AsyncKernelManager(
        kernel_name="walkthrough", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
    )
    client = NotebookClient(nb, km=km, timeout=180, resources={"metadata": {"path": str(cwd)}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WALKTHROUGH_OUT", str(out))  # the kernel inherits this process's environment
        start = time.perf_counter()
        try:
            client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
        finally:
            if km.has_kernel:  # nbclient stops only the kernels of the managers it made itself
                run_sync(km.shutdown_kernel)(now=True)
        seconds = time.perf_counter() - start
    return nb, out, cwd, seconds


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_notebook_runs_every_cell_in_this_interpreter(executed):
    nb, _, _, seconds = executed
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert _stdout(code[-1]).strip() == f"kernel prefix: {sys.prefix}"
    print(f"walkthrough.ipynb executed in {seconds:.1f} s")


def test_notebook_shows_and_writes_its_figures_and_nothing_else(executed):
    nb, out, cwd, _ = executed
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(shown) == len(FIGURES)
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert list(cwd.iterdir()) == []  # the working directory is left as it was


def test_notebook_prints_what_its_table_says(executed):
    nb, out, _, _ = executed
    printed = "".join(_stdout(c) for c in nb.cells if c.cell_type == "code")
    # The data-size table it wrote, read back here: the second run_grid reused every run.
    meta = json.loads((out / "data_size.meta.json").read_text())
    assert (meta["runs_computed"], meta["runs_reused"]) == (0, meta["runs"]) and meta["runs"] > 0
    assert "runs trained: 0, reused: " + str(meta["runs"]) in printed
    # The least-squares power law it reports, recomputed from that table: one value per data set.
    df = read_results(out / "data_size.csv")
    ls = df[df["epoch"] == 10].drop_duplicates(["num_train", "seed"])
    fit = fit_power_law(ls["num_train"], ls["ols_w_err_norm"], units=ls["seed"])
    assert fit.high < 0
    assert f"least squares ‖ŵ_ols − w‖ {fit.trend('n')}" in printed
    # It names the epoch it summarizes and refuses, in words, a figure that would pool.
    assert "checkpoint shown: epoch 10" in printed
    assert "error_facets refused: error_facets would pool over loss (squared, huber)" in printed
