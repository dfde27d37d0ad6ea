"""The engine's and dispatch's settings: one frozen object, passed with each task to every worker.

A setting changed in a notebook as a module global would reach the process that changed it and
no other: loky's and Dask's workers import the module afresh. So the settings travel with the
work: ``run_grid(grid, options=Options(cuda_graphs=False))`` hands them to every chunk, on every
worker. None of them changes a run's numbers (tests/test_engine.py checks the budgets and the
graphs), except ``chain_features``, which picks the arithmetic of a step's residuals and so is
part of the engine's revision: change it only to compare.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from numbers import Integral

from ._checks import _is_real, fail

__all__ = ["Options"]

_MiB, _GiB = 2**20, 2**30


@dataclass(frozen=True)
class Options:
    """Settings of the batched engine and of local dispatch.

    Parameters
    ----------
    chunk_memory_budget : int, default=128 MiB
        Bytes one chunk may hold on a CPU. With one chunk per worker this bounds a grid's memory
        by workers x budget, however many runs the grid has. On a GPU the budget is a share of
        its free memory (see study.plan.GPU_MEMORY_SHARE).
    draw_budget_cpu, draw_budget_cuda : int, default=64 MiB, 2 GiB
        Bytes that drawing counter numbers may take at once: streams are drawn in slices under
        it (on a GPU, few large slices: each slice costs a few dozen kernel launches).
    sum_budget_cpu, sum_budget_cuda : int, default=8 MiB, 2 GiB
        Bytes that the products summed at once may take (the second moments', a Huber
        checkpoint's): streams are summed in slices under it. Small on a CPU, where a fresh large
        block costs its page faults (measured: a 48 MB temporary's took 24 ms, its sums 8 ms) and
        a slice's tree stays in cache: 4-8 MB were the fastest of 1 to 64 MB (G of 20 to 5,000
        streams: 1.5-7x faster than 64 MB).
    order_budget : int, default=64 MiB
        Bytes that the permutations of several epochs, drawn in one pass, may take: a pass costs
        about a hundred operations whatever its size, which is most of a small chunk's time on a
        CPU (W: 10.7 -> 6 ms a chunk of 120 runs of 5 examples).
    cuda_graphs : bool, default=True
        On a GPU, an epoch's steps are replayed as one CUDA graph from the second epoch on (the
        first runs them one by one, which also loads their kernels): a step is 11 small kernels,
        and the GPU otherwise waits on their launches (profiled on an H200, 100k runs of W: busy
        15% of the time). The same kernels on the same buffers, so the same bits; False runs
        every epoch eagerly.
    chain_features : int, default=16
        Up to this many features, a step's residuals are a chain of fused multiply-adds over
        them (the arithmetic of engine revision 4, which their runs keep); past it, a pairwise
        tree over the features: d products at once and log2(d) adds, where the chain takes d
        dispatches a step (d2l §3.7's d = 200: 5x faster).
    compiled : bool, default=True
        On a CPU, each epoch's steps of plain SGD run as one compiled loop (study.kernels,
        Numba) rather than a dozen tensor operations a step, and so do a checkpoint's sums; on a
        CUDA GPU an epoch is one Triton kernel (study.gpu_kernels). The same arithmetic in the
        same order, so the same bits. False, or where Numba (CPU) or Triton (GPU) is missing,
        takes the tensor path.
    bundle_runs, bundle_seconds : int, float, default=2048, 1.0
        On one CPU worker, chunks of one batch_size and number of features are trained together,
        in one step loop (study.engine.train_batched_together), up to this many runs and
        estimated seconds at once, and one chunk's memory budget in all: a step over a few
        hundred runs costs its dispatches more than its arithmetic, and chunks of other sizes
        share them (W on one core: about 10% faster, the same numbers to the bit). The seconds
        bound what a stop loses: a bundle's segments are kept when all of them are done.
    """

    chunk_memory_budget: int = 128 * _MiB
    draw_budget_cpu: int = 64 * _MiB
    draw_budget_cuda: int = 2 * _GiB
    sum_budget_cpu: int = 8 * _MiB
    sum_budget_cuda: int = 2 * _GiB
    order_budget: int = 64 * _MiB
    cuda_graphs: bool = True
    chain_features: int = 16
    compiled: bool = True
    bundle_runs: int = 2048
    bundle_seconds: float = 1.0

    def __post_init__(self) -> None:
        where = "parameter of Options"
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("cuda_graphs", "compiled"):
                if not isinstance(value, bool):
                    fail(f.name, where, "true or false", value)
            elif f.name == "bundle_seconds":
                # _is_real, not isinstance(value, Real): typeshed's numbers.Real has no >= with an int
                if not _is_real(value) or not value >= 0:
                    fail(f.name, where, "a number of seconds >= 0", value)
            elif isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                fail(f.name, where, "an integer >= 1", value)

    def draw_budget(self, device_type: str) -> int:
        return self.draw_budget_cpu if device_type == "cpu" else self.draw_budget_cuda

    def sum_budget(self, device_type: str) -> int:
        return self.sum_budget_cpu if device_type == "cpu" else self.sum_budget_cuda


#: The settings a caller who gives none gets.
DEFAULT = Options()
