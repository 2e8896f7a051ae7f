"""Checkpoints that a stopped run resumes from, and only a run of the same configuration."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

from ..core.params import as_dict

FINGERPRINT_FILE = "sqlora_fingerprint.json"


def fingerprint(*parts) -> str:
    """A hash of everything a checkpoint depends on, so a resume never mixes two configurations."""
    plain = [as_dict(part) if dataclasses.is_dataclass(part) else part for part in parts]
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def files_digest(paths: list[Path]) -> str:
    """A cheap content digest of files and folders (names, sizes, first and last MiB of each file),
    so that checkpoints of another base model, training set or training code are never resumed."""
    digest = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in Path(root).rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if Path(root).is_dir() else [Path(root)]
        for path in files:
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}".encode())
            with path.open("rb") as f:
                digest.update(f.read(1 << 20))
                if size > 2 << 20:
                    f.seek(-(1 << 20), os.SEEK_END)
                    digest.update(f.read())
    return digest.hexdigest()[:16]


def resumable_checkpoint(checkpoint_dir: Path, run_fingerprint: str) -> str | None:
    """The last checkpoint of an interrupted run with the same configuration; others are cleared."""
    stamp = checkpoint_dir / FINGERPRINT_FILE
    same_run = stamp.is_file() and json.loads(stamp.read_text())["fingerprint"] == run_fingerprint
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    complete = [c for c in checkpoints if (c / "trainer_state.json").is_file()]
    if same_run and complete:
        return str(complete[-1])
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    stamp.write_text(json.dumps({"fingerprint": run_fingerprint}) + "\n")
    return None


def step_of(checkpoint: str | Path | None) -> int:
    return int(str(checkpoint).rsplit("-", 1)[-1]) if checkpoint else 0


def last_finite_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest complete checkpoint whose adapter weights are all finite."""
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=step_of, reverse=True)
    for checkpoint in checkpoints:
        if (checkpoint / "trainer_state.json").is_file() and adapter_is_finite(checkpoint):
            return str(checkpoint)
    return None


def adapter_is_finite(checkpoint: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    weights = checkpoint / "adapter_model.safetensors"
    if not weights.is_file():
        return False
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(weights)).values())


def stage_code(stage: str, script: Path, dvc_yaml: Path = Path("dvc.yaml")) -> list[Path]:
    """The code a stage's outputs depend on: its code deps in dvc.yaml (so that DVC and the resume
    fingerprint follow one list), or, run outside the pipeline, the script and the whole package."""
    import yaml

    if dvc_yaml.is_file():
        deps = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"][stage]["deps"]
        code = [Path(dep) for dep in deps if str(dep).startswith(("src/", "stages/"))]
        if code:
            return code
    return [script, Path(__file__).resolve().parents[1]]
