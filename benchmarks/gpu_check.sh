#!/usr/bin/env bash
# The GPU check, one script within about 8 minutes: the CUDA tests (the Triton kernel's bits
# against the tensor path's first), the GPU benchmark rows (the kernel against the tensor path,
# and the same machine's CPU cores for comparison), where the GPU's time goes on 1M runs of W
# (profile_gpu.py), then the tests that touch devices. The CPU scaling rows:
# `bench_engines.py --rows scaling`. Run from the repository root on a machine with a CUDA GPU, the project importable
# from its checkout (dask may be absent: its tests skip):
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
# Whether the cores are physical or hyperthreads: 16 vCPUs on 8 cores cannot scale like 16 cores.
lscpu | grep -E '^(Model name|Socket|Core|Thread|CPU\(s\)|NUMA node\(s\))' || true
$py -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cores', os.cpu_count())"
# The analysis engine needs DuckDB, which a bare device image may lack and cannot download: carry a
# wheel in wheels/ (made beforehand with `pip download duckdb --only-binary=:all: --python-version
# 3.12 -d wheels`) and it is installed offline here.
$py -c "import duckdb" 2>/dev/null || $py -m pip install -q --no-index --find-links wheels duckdb \
  || echo "duckdb is missing: the tests of tables and figures will fail"
$py -c "import triton; print('triton', triton.__version__)" || echo "Triton is missing: the GPU takes the tensor path"
# The Triton kernel first: its bits against the tensor path's, then every CUDA test.
step 90 cuda_tests $py -m pytest -q -p no:cacheprovider -k "cuda" tests/
step 140 bench_gpu $py benchmarks/bench_engines.py --rows gpu --out "$out/benchmarks.csv"
step 60 profile_gpu $py benchmarks/profile_gpu.py 1M --rows 30
step 150 device_tests $py -m pytest -q -p no:cacheprovider -x tests/test_engine.py tests/test_streams.py \
  tests/test_data.py tests/test_runner.py tests/test_gpu_kernels.py
