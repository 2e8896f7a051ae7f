#!/usr/bin/env bash
# On the GPU machine (no network; see ../shared/gpu/README.md and docs/RESULTS.md): copy the
# project into a fresh git repository, run the default pipeline from the offline Spider zip and
# the GGUF, and leave logs and results in $OUT.  Extra arguments go to `dvc exp run`.
set -euo pipefail
out="${OUT:-/tmp/out}"; mkdir -p "$out"
command -v python >/dev/null || ln -sf "$(command -v python3)" /usr/local/bin/python
export HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export GIT_AUTHOR_NAME=gpu GIT_AUTHOR_EMAIL=gpu@localhost GIT_COMMITTER_NAME=gpu GIT_COMMITTER_EMAIL=gpu@localhost
rm -rf /root/work && mkdir -p /root/work
cp -r dvc.yaml params.yaml pyproject.toml stages src benchmarks /root/work/ && cd /root/work
git init -q && git add -A && git commit -qm "gpu run"
python -m dvc init -q
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
git rev-parse HEAD >> "$out/gpu.txt"
python -m dvc exp run -S data.source=/root/spider_data.zip \
  -S "model.name_or_path=$(ls /root/model/*.gguf)" "$@" 2>&1 | tee "$out/repro.log"
tar czf "$out/results.tgz" metrics outputs/predictions outputs/eval params.yaml dvc.lock
