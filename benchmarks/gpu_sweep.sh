#!/usr/bin/env bash
# On the GPU machine: experiments one after another in one fresh copy of the project, each a
# `dvc exp run` of the pipeline with its own overrides (one argument per experiment, "" for the
# defaults).  Each one's metrics, per-question verdicts, generations and log land in
# /root/results/<name>-<n>/.  Pick the GPU with CUDA_VISIBLE_DEVICES; run two at once on two GPUs.
#   CUDA_VISIBLE_DEVICES=0 bash benchmarks/gpu_sweep.sh a "" "-S lora.r=32" "-S train.epochs=5"
set -uo pipefail
name="$1"; shift
source benchmarks/gpu_env.sh
[ -d "/root/$name" ] || bash benchmarks/gpu_setup.sh "/root/$name" || exit 1
cd "/root/$name"
n=0
for overrides in "$@"; do
  n=$((n + 1)); dest="/root/results/$name-$n"; mkdir -p "$dest"
  echo "$overrides" > "$dest/overrides.txt"
  git checkout -q -- params.yaml  # each experiment is the committed defaults plus its own overrides
  started=$(date +%s)
  if eval python -m dvc exp run "$overrides" > "$dest/log.txt" 2>&1; then status=ok; else status=failed; fi
  echo "$status $(( $(date +%s) - started ))" > "$dest/status.txt"
  cp -r metrics "$dest/" 2>/dev/null
  cp outputs/eval/per_question.jsonl outputs/predictions/finetuned/generations.jsonl "$dest/" 2>/dev/null
  python benchmarks/summarize_runs.py "$dest"
done
