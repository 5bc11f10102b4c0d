#!/usr/bin/env bash
# GPU check: the paper preset at 1 mm for a few steps (loader vs model samples/s, peak GPU
# memory) and one short trial of the tiny preset; writes benchmarks/results/gpu_check.json.
# Budget: under 8 minutes on one GPU (a hard limit of 8 minutes is enforced here).
# Without a GPU it prints why and exits 0. Extra arguments go to benchmarks/gpu_check.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export WANDB_MODE="${WANDB_MODE:-offline}"
cd "${ROOT}"
exec timeout --signal=INT 480 "${PYTHON}" benchmarks/gpu_check.py "$@"
