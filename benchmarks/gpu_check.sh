#!/usr/bin/env bash
# The GPU check, one script within about 8 minutes: the CUDA tests, the GPU benchmark rows (with
# the same machine's CPU cores for comparison), the CPU scaling rows (1, 2, 4, 8, 16 workers), a
# profile of a GPU grid, then the tests that touch devices. Run from the repository root on a
# machine with a CUDA GPU, the project importable from its checkout (dask may be absent: its
# tests skip):
#
#     PYTHONPATH=. bash benchmarks/gpu_check.sh [OUTDIR]
#
# Each step has its own time limit, so that a slow one cannot eat the others' time; what each
# printed is kept in OUTDIR (default results/gpu_check, or $OUT where that is set).
set -u
out=${1:-${OUT:-results/gpu_check}}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
step() {  # step SECONDS NAME COMMAND...: run, log to OUTDIR/NAME.txt, report the status and time
  local limit=$1 name=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - start)) s"; tail -n 30 "$out/$name.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cores', os.cpu_count())"
step 90 cuda_tests $py -m pytest -q -p no:cacheprovider -k "cuda" tests/
step 150 bench_gpu $py benchmarks/bench_engines.py --rows gpu --out "$out/benchmarks.csv"
step 120 bench_scaling $py benchmarks/bench_engines.py --rows scaling --out "$out/benchmarks.csv"
step 40 profile_gpu $py -c "
import cProfile, pstats, torch
from study.grid import Grid, log_sizes
from study.runner import run_grid
grid = Grid(num_train=log_sizes(5, 10_000), lr=[0.01, 0.03, 0.1], loss=['squared', 'huber'], epoch=[1, 2, 3, 5, 10], replicates=1516)
run_grid(Grid(num_train=[100], replicates=10), device='cuda', progress=False)
cProfile.run('run_grid(grid, device=\"cuda\", progress=False)', '/tmp/gpu.prof')
pstats.Stats('/tmp/gpu.prof').sort_stats('tottime').print_stats(25)
print('peak GPU memory', torch.cuda.max_memory_allocated() / 2**30, 'GiB')
"
step 150 device_tests $py -m pytest -q -x -p no:cacheprovider tests/test_runner.py tests/test_engine.py tests/test_streams.py tests/test_data.py tests/test_exercises.py tests/test_results.py
