#!/usr/bin/env bash
# Experiments one after another in one fresh copy of the project (benchmarks/gpu_setup.sh, which
# reads SQLORA_SPIDER_ZIP and the other variables it lists), each a `dvc exp run` of the pipeline
# with its own overrides: one argument per experiment, "" for the defaults.  Each one's metrics,
# per-question verdicts, generations and log land in RESULTS/<name of WORKDIR>-<n>/.  Pick the GPU
# with CUDA_VISIBLE_DEVICES; run two at once on two GPUs, each with its own WORKDIR.
#
#   usage: SQLORA_SPIDER_ZIP=path/to/spider_data.zip bash benchmarks/gpu_sweep.sh WORKDIR RESULTS OVERRIDES...
#   e.g.   CUDA_VISIBLE_DEVICES=0 bash benchmarks/gpu_sweep.sh ../runs/a ../results "" "-S lora.r=32" "-S train.epochs=5"
#
# An existing WORKDIR is reused (its DVC cache and run cache too); each experiment starts from the
# committed params.yaml.
set -uo pipefail
usage="usage: SQLORA_SPIDER_ZIP=path/to/spider_data.zip bash benchmarks/gpu_sweep.sh WORKDIR RESULTS OVERRIDES..."
[ $# -ge 3 ] || { echo "$usage" >&2; exit 2; }
work="$1"; results="$2"; shift 2
mkdir -p "$results" && results="$(cd "$results" && pwd)"
name="$(basename "$work")"
summarize="$(pwd)/benchmarks/summarize_runs.py"
source benchmarks/gpu_env.sh
[ -d "$work" ] || bash benchmarks/gpu_setup.sh "$work" || exit 1
cd "$work"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the copy's own sqlora, not an installed one
n=0
for overrides in "$@"; do
  n=$((n + 1)); dest="$results/$name-$n"; mkdir -p "$dest"
  echo "$overrides" > "$dest/overrides.txt"
  git checkout -q -- params.yaml  # each experiment is the committed defaults plus its own overrides
  started=$(date +%s)
  if eval python -m dvc exp run "$overrides" > "$dest/log.txt" 2>&1; then status=ok; else status=failed; fi
  echo "$status $(( $(date +%s) - started ))" > "$dest/status.txt"
  cp -r metrics "$dest/" 2>/dev/null
  cp outputs/eval/per_question.jsonl outputs/predictions/finetuned/generations.jsonl outputs/report/index.html "$dest/" 2>/dev/null
  python "$summarize" "$dest"
done
