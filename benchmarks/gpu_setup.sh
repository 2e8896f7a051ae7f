#!/usr/bin/env bash
# On the GPU machine (no network; see ../shared/gpu/README.md and docs/RESULTS.md): copy the
# project into a fresh git repository at $1 (default /root/work) whose params.yaml reads the
# offline Spider zip and GGUF that unpack.sh left in /root.  Source benchmarks/gpu_env.sh first.
set -euo pipefail
work="${1:-/root/work}"
command -v python >/dev/null || ln -sf "$(command -v python3)" /usr/local/bin/python
# Wheels newer than the image's, when carried in .device/xw (docs/RESULTS.md, session 4): the
# transformers that uv.lock pins, with the tokenizers and safetensors it needs
if compgen -G "/root/stash/xw/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /root/site /root/stash/xw/*.whl
fi
# unpack.sh installs the carried wheels with --no-compile; pip compiles them on a user's machine
[ -d /root/site ] && python -m compileall -q -j 0 /root/site >/dev/null 2>&1 || true
rm -rf "$work" && mkdir -p "$work"
cp -r dvc.yaml params.yaml pyproject.toml stages src benchmarks "$work"/ && cd "$work"
sed -i -e "s#^  source: .*#  source: /root/spider_data.zip#" \
       -e "s#^  name_or_path: .*#  name_or_path: $(ls /root/model/*.gguf)#" params.yaml
git init -q && git add -A && git commit -qm "gpu run"
python -m dvc init -q && git commit -qam "dvc init"
