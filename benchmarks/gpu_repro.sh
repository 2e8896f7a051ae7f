#!/usr/bin/env bash
# Run the default pipeline once in a fresh copy of the project (benchmarks/gpu_setup.sh, which
# reads SQLORA_SPIDER_ZIP and the other variables it lists), and leave the card's name, the
# commit, the log and the results in OUTDIR.  Further arguments go to `dvc exp run`.
#
#   usage: SQLORA_SPIDER_ZIP=path/to/spider_data.zip bash benchmarks/gpu_repro.sh WORKDIR OUTDIR [dvc exp run options...]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: SQLORA_SPIDER_ZIP=path/to/spider_data.zip bash benchmarks/gpu_repro.sh WORKDIR OUTDIR [dvc exp run options...]" >&2; exit 2; }
work="$1"; out="$2"; shift 2
mkdir -p "$out" && out="$(cd "$out" && pwd)"
source benchmarks/gpu_env.sh
bash benchmarks/gpu_setup.sh "$work" && cd "$work"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the copy's own sqlora, not an installed one
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
git rev-parse HEAD >> "$out/gpu.txt"
python -m dvc exp run "$@" 2>&1 | tee "$out/repro.log"
tar czf "$out/results.tgz" metrics outputs/predictions outputs/eval outputs/report params.yaml dvc.lock
