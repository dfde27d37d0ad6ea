#!/usr/bin/env bash
# The GPU check, one script within about 8 minutes: the GPU benchmark rows (with the same
# machine's CPU cores for comparison), the CUDA tests, where the GPU's time goes on 100k runs of W
# (profile_gpu.py), the CPU scaling rows (1, 2, 4, 8, 16 workers), then the tests that touch
# devices. Run from the repository root on a machine with a CUDA GPU, the project importable
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
step 100 bench_gpu $py benchmarks/bench_engines.py --rows gpu --out "$out/benchmarks.csv"
step 45 cuda_tests $py -m pytest -q -p no:cacheprovider -k "cuda" tests/
step 90 profile_gpu $py benchmarks/profile_gpu.py 100k  # 1M under the profiler outlasts a minute
step 190 bench_scaling $py benchmarks/bench_engines.py --rows scaling --out "$out/benchmarks.csv"
step 100 device_tests $py -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_exercises.py tests/test_streams.py \
  tests/test_data.py tests/test_schema.py tests/test_summaries.py tests/test_runner.py
