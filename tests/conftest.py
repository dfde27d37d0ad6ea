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
