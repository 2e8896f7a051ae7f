"""A temporary git + DVC repository holding the project's pipeline, for end-to-end tests: the
stage scripts import that repository's own src/, and params.yaml points at tiny local data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# the smallest run that still goes through every stage: a few training steps, short answers
QUICK = {
    "train": {"max_steps": 4, "batch_size": 4, "max_length": 192, "logging_steps": 1, "save_steps": 2,
              "warmup_steps": 0, "learning_rate": 5.0e-3,
              # a random tiny model answers nothing yet; the check has its own tests
              "check_generations": False},
    "predict": {"batch_size": 8, "max_new_tokens": 24},
    "eval": {"workers": 1},
}


def dvc_env(repo: Path) -> dict[str, str]:
    """Stage scripts import the repository's own src/ (not an installed copy)."""
    return dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
                SQLORA_PROGRESS="0", PYTHONPATH=str(repo / "src"),
                PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=dvc_env(repo),
                          capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
                          cwd=repo, check=True, capture_output=True, text=True).stdout


def new_project(repo: Path, spider: Path, model: Path, overrides: dict[str, dict]) -> Path:
    """The project as a fresh clone has it (pipeline, code, .gitignore, the reference metrics/),
    with params.yaml pointed at `spider` and `model` and `overrides` applied; one commit."""
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "src", "metrics"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(source=str(spider), sha256="")
    params["model"].update(name_or_path=str(model), sha256="")
    for section, values in overrides.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pipeline")
    return repo
