#!/usr/bin/env bash
# The one prepared GPU check, at most 9 minutes on one GPU: the smoke check (about a minute; the
# check stops there if a stage fails), the GPU tests of the Triton kernels and of the fast delta
# training, then benchmarks/gpu_bench.py within a time budget. Installs nothing: it needs a Python
# with a CUDA build of torch, triton, numpy and pytest already installed; the package is used from
# src/ through PYTHONPATH. Everything it writes goes to $OUT (default ./gpu_out):
#   env.txt         nvidia-smi, versions
#   smoke.txt       benchmarks/gpu_smoke.py (and smoke.json)
#   gpu_tests.txt   pytest -m gpu on tests/ops/test_ops_triton.py and tests/ops/test_train_fast.py
#   gpu_bench.log   the benchmark's progress lines and final tables
#   gpu_bench.json  rows, targets, environment;  gpu_bench.md  the tables
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
# Limits (seconds): SMOKE_TIMEOUT (90), TEST_TIMEOUT (150), BENCH_BUDGET (200: no new row after
# it), BENCH_TIMEOUT (260). Worst case 90 + 150 + 260 = 500 s, plus start-up.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET

{
  nvidia-smi || true
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())"
} > "$OUT/env.txt" 2>&1

start=$(date +%s)
timeout "${SMOKE_TIMEOUT:-90}" "$PY" benchmarks/gpu_smoke.py --out "$OUT" > "$OUT/smoke.txt" 2>&1
status=$?
echo "gpu_smoke exit code: $status after $(( $(date +%s) - start )) s" >> "$OUT/smoke.txt"
grep -E "^(ok|FAIL|skip) |^smoke:|exit code" "$OUT/smoke.txt"
if [ "$status" -ne 0 ]; then
  echo "smoke check failed: stopping before the tests and the benchmark (see $OUT/smoke.txt)"
  exit "$status"
fi

start=$(date +%s)
if "$PY" -c "import pytest" 2> /dev/null; then
  timeout "${TEST_TIMEOUT:-150}" "$PY" -m pytest -q -rs -m gpu -p no:cacheprovider \
    tests/ops/test_ops_triton.py tests/ops/test_train_fast.py > "$OUT/gpu_tests.txt" 2>&1
  echo "pytest exit code: $? after $(( $(date +%s) - start )) s" >> "$OUT/gpu_tests.txt"
else
  echo "pytest is not installed here: GPU tests not run" > "$OUT/gpu_tests.txt"
fi
tail -n 3 "$OUT/gpu_tests.txt"

start=$(date +%s)
timeout "${BENCH_TIMEOUT:-260}" "$PY" benchmarks/gpu_bench.py --out "$OUT" \
  --budget-s "${BENCH_BUDGET:-200}" > "$OUT/gpu_bench.log" 2>&1
echo "gpu_bench exit code: $? after $(( $(date +%s) - start )) s" >> "$OUT/gpu_bench.log"
tail -n 12 "$OUT/gpu_bench.log"
