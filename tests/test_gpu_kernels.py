"""The Triton kernel of plain SGD's epoch: the tensor path's numbers, bit for bit, on a CUDA GPU
(and, where Triton is installed, in Triton's interpreter on this CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_kernels import GRIDS, _assert_same_bits, _chunks

from study import gpu_kernels
from study.engine import train_batched
from study.options import Options

ROOT = Path(__file__).resolve().parents[1]
on_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and gpu_kernels.AVAILABLE), reason="needs a CUDA GPU and Triton"
)


def test_usable_only_where_the_kernel_serves():
    cuda = torch.device("cuda")
    assert not gpu_kernels.usable(torch.device("cpu"), 2, 32, wide=False)  # not interpreted here
    assert not gpu_kernels.usable(cuda, 20, 32, wide=True)  # the features' tree: the tensor path
    assert not gpu_kernels.usable(cuda, 2, gpu_kernels.MAX_BATCH + 1, wide=False)
    assert gpu_kernels.usable(cuda, 2, 32, wide=False) == gpu_kernels.AVAILABLE


@on_cuda
@pytest.mark.parametrize("name", list(GRIDS))
def test_the_cuda_kernel_gives_the_tensor_paths_bits(name, monkeypatch):
    calls = []
    kernel = gpu_kernels.plain_epoch
    monkeypatch.setattr(gpu_kernels, "plain_epoch", lambda *a, **k: (calls.append(1), kernel(*a, **k)))
    grid = GRIDS[name]
    for chunk in _chunks(grid):
        tensor = train_batched(chunk, grid.checkpoints, device="cuda", options=Options(compiled=False))
        fused = train_batched(chunk, grid.checkpoints, device="cuda", options=Options(compiled=True))
        _assert_same_bits(tensor, fused)
    assert calls  # every grid has chunks the kernel serves (wide: its 3 features)


@on_cuda
def test_the_cuda_kernel_does_not_depend_on_the_chunk():
    """A run's numbers alone or beside a thousand others (several thread blocks, a ragged last one)."""
    grid = GRIDS["losses and reductions"]
    chunk = _chunks(grid)[1]
    whole = train_batched(chunk, grid.checkpoints, device="cuda")
    for rows in (np.arange(1), np.arange(len(chunk) - 5, len(chunk))):
        part = train_batched(chunk.take(rows), grid.checkpoints, device="cuda")
        _assert_same_bits(part, whole.take(rows))


_INTERPRETED = """
import warnings
warnings.simplefilter("ignore")
from study import gpu_kernels, kernels
from study.engine import train_batched
from study.options import Options
import sys; sys.path.insert(0, "tests")
from test_kernels import GRIDS, _assert_same_bits, _chunks
kernels.AVAILABLE = False  # the CPU's tensor path, where the interpreted kernel is asked for
assert gpu_kernels.usable(__import__("torch").device("cpu"), 2, 32, wide=False)
calls, kernel = [], gpu_kernels.plain_epoch
gpu_kernels.plain_epoch = lambda *a, **k: (calls.append(1), kernel(*a, **k))
for grid in GRIDS.values():
    for chunk in _chunks(grid):
        tensor = train_batched(chunk, grid.checkpoints, options=Options(compiled=False))
        fused = train_batched(chunk, grid.checkpoints, options=Options(compiled=True))
        _assert_same_bits(tensor, fused)
assert calls
print("same bits")
"""


def _interpreter_checked() -> bool:
    """Triton's interpreter as checked here (3.9): 3.6's cannot take a scalar argument as an
    index under NumPy 2.4 (seen on a GPU machine: a TypeError from its own __index__)."""
    import triton

    return tuple(int(v) for v in triton.__version__.split(".")[:2]) >= (3, 9)


@pytest.mark.skipif(not gpu_kernels.AVAILABLE, reason="Triton is not installed (a CPU build of torch)")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the compiled kernel is tested on it")
def test_the_interpreted_kernel_gives_the_tensor_paths_bits_on_a_cpu():
    if not _interpreter_checked():
        pytest.skip("Triton's interpreter before 3.9 (see _interpreter_checked)")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "same bits" in done.stdout, done.stderr[-2000:]
