"""Files written so that a failure never leaves half of them behind: build beside, then swap in."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import SqloraError


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def staging_area(target: Path) -> Iterator[Path]:
    """A temp folder beside target (same disk, so a rename can publish it); always removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(new: Path, target: Path) -> None:
    """Swap `new` in as `target`; the old target survives if the swap fails."""
    try:
        if not target.exists():
            os.replace(new, target)
            return
        # os.replace cannot overwrite a non-empty folder (nor any folder on Windows): move the
        # old one aside first, and move it back if the new one cannot take its place.
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        backup.rmdir()
        os.replace(target, backup)
        try:
            os.replace(new, target)
        except BaseException:  # an interrupt (Ctrl+C) too: the old folder goes back under its name
            os.replace(backup, target)
            raise
    except OSError as error:
        raise SqloraError(f"cannot put the new copy in place of {target} (is a file in it open?): "
                          f"{error}") from None
    shutil.rmtree(backup, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a file whole or not at all: a temp file beside it, then one rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_json_atomic(path: str | Path, data) -> None:
    """JSON written whole or not at all; allow_nan=False: a metric is never NaN (JSON has no NaN)."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
