# Sourced by the GPU scripts: offline, unbuffered, no telemetry, a git identity for dvc exp, and
# bytecode written and kept as on a user's machine (a process that compiles every module it
# imports would make the stages' load times look seconds longer than they are).
export HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export GIT_AUTHOR_NAME=gpu GIT_AUTHOR_EMAIL=gpu@localhost GIT_COMMITTER_NAME=gpu GIT_COMMITTER_EMAIL=gpu@localhost
unset PYTHONDONTWRITEBYTECODE
# The stages run `python`; where only python3 exists, put a `python` link first on PATH.
if ! command -v python >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
  _shim="${TMPDIR:-/tmp}/sqlora-python-shim"
  mkdir -p "$_shim" && ln -sf "$(command -v python3)" "$_shim/python" && export PATH="$_shim:$PATH"
  unset _shim
fi
