#!/usr/bin/env bash
# On a GPU host: a small demo archive through `dsmar run` on LocalCUDACluster; throughput (MP/s, wall) and
# the steps that ran on the CPU go to $OUT/gpu_cluster_check.json (scripts/gpu_cluster_check.py).
# Usage: OUT=/tmp/out scripts/gpu_cluster_check.sh [SIZE [METHOD]]   (no install needed: PYTHONPATH=.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" scripts/gpu_cluster_check.py "$@"
