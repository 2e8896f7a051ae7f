#!/usr/bin/env bash
# On the GPU machine (no network; see ../shared/gpu/README.md and docs/RESULTS.md): run the
# default pipeline in a fresh copy of the project, from the offline Spider zip and the GGUF, and
# leave logs and results in $OUT.  Extra arguments go to `dvc exp run`.
set -euo pipefail
out="${OUT:-/tmp/out}"; mkdir -p "$out"
source benchmarks/gpu_env.sh
bash benchmarks/gpu_setup.sh /root/work && cd /root/work
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
git rev-parse HEAD >> "$out/gpu.txt"
python -m dvc exp run "$@" 2>&1 | tee "$out/repro.log"
tar czf "$out/results.tgz" metrics outputs/predictions outputs/eval params.yaml dvc.lock
