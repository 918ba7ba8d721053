#!/usr/bin/env bash
# The GPU benchmark in one command, on a machine with CUDA (see bench/bench_gpu.py):
#   bash bench/gpu.sh [bench_gpu.py options]
# Times, at MovieLens-25M shape on the GPU, one epoch of each model, all users' top 10 and the whole
# nightly train step, and prints one table with the CPU column beside: the recording of the 2-core
# machine in bench/reference/cpu-25m.json (pass --devices cuda,cpu to measure this machine's CPU
# instead). Writes the rows to $OUT/bench-gpu.json (OUT defaults to the current folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "bench/gpu.sh: no CUDA device for $PYTHON's torch (on a CPU: python bench/bench_gpu.py --devices cpu)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
args=(--devices cuda --json "${OUT:-.}/bench-gpu.json")
if [ -f bench/reference/cpu-25m.json ]; then
  args+=(--cpu-reference bench/reference/cpu-25m.json)
fi
exec "$PYTHON" bench/bench_gpu.py "${args[@]}" "$@"
