"""Outputs are built beside their target and swapped in: a failure at any step leaves the old
content as it was and no temporary file or folder behind (sqlora.core.files)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from sqlora.core.errors import SqloraError
from sqlora.core.files import replace_dir, staging_area, write_json_atomic, write_text_atomic


def listing(folder: Path) -> dict[str, str]:
    """Every file and folder under folder, with each file's text (folders: "/")."""
    return {str(path.relative_to(folder)): "/" if path.is_dir() else path.read_text(encoding="utf-8")
            for path in sorted(folder.rglob("*"))}


def old_folder(tmp_path: Path) -> Path:
    target = tmp_path / "out" / "spider"
    (target / "sub").mkdir(parents=True)
    (target / "a.txt").write_text("old a", encoding="utf-8")
    (target / "sub" / "b.txt").write_text("old b", encoding="utf-8")
    return target


def new_folder(tmp_path: Path) -> Path:
    new = tmp_path / "staged" / "spider"
    new.mkdir(parents=True)
    (new / "c.txt").write_text("new c", encoding="utf-8")
    return new


def failing_replace(monkeypatch, failing_call: int, error: BaseException) -> list[tuple]:
    """os.replace that raises error on its failing_call-th call (1-based); returns the calls made."""
    calls = []
    real_replace = os.replace

    def replace(source, destination):
        calls.append((Path(source).name, Path(destination).name))
        if len(calls) == failing_call:
            raise error
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    return calls


# ---------------------------------------------------------------- write_text_atomic


def test_write_text_atomic_writes_the_whole_text(tmp_path):
    target = tmp_path / "deep" / "metrics.json"
    write_text_atomic(target, "new\n")
    write_text_atomic(target, "newer\n")
    assert listing(tmp_path / "deep") == {"metrics.json": "newer\n"}
    assert target.read_bytes() == b"newer\n"  # "\n", not the platform's line end


def test_a_write_that_raises_halfway_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "pred.sql"
    target.write_text("old\n", encoding="utf-8")
    real_fdopen = os.fdopen

    class HalfWritten(io.TextIOWrapper):
        def write(self, text):
            super().write(text[: len(text) // 2])
            self.flush()
            raise OSError(28, "No space left on device")

    def fdopen(handle, *args, **kwargs):
        return HalfWritten(real_fdopen(handle, "wb"), encoding="utf-8", newline="\n")

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(target, "SELECT 1\n" * 1000)
    assert listing(tmp_path) == {"pred.sql": "old\n"}


def test_text_that_cannot_be_encoded_leaves_the_old_file(tmp_path):
    target = tmp_path / "pred.sql"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "SELECT 1\n" * 1000 + "\ud800")  # a lone surrogate: no UTF-8 for it
    assert listing(tmp_path) == {"pred.sql": "old\n"}


@pytest.mark.parametrize("error", [OSError(13, "Permission denied"), KeyboardInterrupt()])
def test_a_failed_rename_leaves_the_old_file(tmp_path, monkeypatch, error):
    target = tmp_path / "pred.sql"
    target.write_text("old\n", encoding="utf-8")
    calls = failing_replace(monkeypatch, 1, error)
    with pytest.raises(type(error)):
        write_text_atomic(target, "new\n")
    assert calls and calls[0][1] == "pred.sql"
    assert listing(tmp_path) == {"pred.sql": "old\n"}


def test_json_with_nan_is_refused_and_the_old_file_kept(tmp_path):
    target = tmp_path / "eval.json"
    write_json_atomic(target, {"exec": 0.5})
    with pytest.raises(ValueError):
        write_json_atomic(target, {"exec": float("nan")})
    assert listing(tmp_path) == {"eval.json": json.dumps({"exec": 0.5}, indent=2) + "\n"}


# ---------------------------------------------------------------- replace_dir


def test_replace_dir_puts_the_new_folder_in_place(tmp_path):
    target, new = old_folder(tmp_path), new_folder(tmp_path)
    replace_dir(new, target)
    assert listing(tmp_path / "out") == {"spider": "/", "spider/c.txt": "new c"}
    assert listing(tmp_path / "staged") == {}
    # where there was none
    replace_dir(new_folder(tmp_path), tmp_path / "out" / "other")
    assert listing(tmp_path / "out" / "other") == {"c.txt": "new c"}


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_failed_swap_keeps_the_old_folder(tmp_path, monkeypatch, failing_call):
    """1: moving the old folder aside fails; 2: moving the new one in fails (a file open in the
    target on Windows, say), and the old one is moved back."""
    target, new = old_folder(tmp_path), new_folder(tmp_path)
    before_out, before_new = listing(tmp_path / "out"), listing(new)
    calls = failing_replace(monkeypatch, failing_call, PermissionError(13, "Access is denied"))
    with pytest.raises(SqloraError, match="cannot put the new copy in place of .*spider.*Access is denied"):
        replace_dir(new, target)
    assert len(calls) == failing_call + (failing_call == 2)  # 2: then the old folder is moved back
    assert listing(tmp_path / "out") == before_out  # the old folder, and no backup beside it
    assert listing(new) == before_new


def test_an_interrupted_swap_keeps_the_old_folder(tmp_path, monkeypatch):
    target, new = old_folder(tmp_path), new_folder(tmp_path)
    before_out = listing(tmp_path / "out")
    failing_replace(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        replace_dir(new, target)
    assert listing(tmp_path / "out") == before_out


# ---------------------------------------------------------------- staging_area


def test_staging_area_is_beside_the_target_and_always_removed(tmp_path):
    target = old_folder(tmp_path)
    before = listing(tmp_path / "out")
    with pytest.raises(RuntimeError, match="halfway"):
        with staging_area(target) as staging:
            assert staging.parent == target.parent and staging.is_dir()
            (staging / "spider").mkdir()
            (staging / "spider" / "part.txt").write_text("half", encoding="utf-8")
            raise RuntimeError("the stage failed halfway")
    assert listing(tmp_path / "out") == before
    with staging_area(tmp_path / "fresh" / "spider") as staging:  # the target's folder is made
        assert staging.parent == tmp_path / "fresh"
    assert listing(tmp_path / "fresh") == {}


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_stage_whose_swap_fails_leaves_the_old_output_and_nothing_else(tmp_path, monkeypatch, failing_call):
    """The way every stage publishes: build in the staging area, then replace_dir."""
    target = old_folder(tmp_path)
    before = listing(tmp_path / "out")
    failing_replace(monkeypatch, failing_call, OSError(16, "Device or resource busy"))
    with pytest.raises(SqloraError):
        with staging_area(target) as staging:
            new = staging / target.name
            new.mkdir()
            (new / "c.txt").write_text("new c", encoding="utf-8")
            replace_dir(new, target)
    assert listing(tmp_path / "out") == before


def test_a_stage_that_succeeds_leaves_only_the_new_output(tmp_path):
    target = old_folder(tmp_path)
    with staging_area(target) as staging:
        new = staging / target.name
        new.mkdir()
        (new / "c.txt").write_text("new c", encoding="utf-8")
        replace_dir(new, target)
    assert listing(tmp_path / "out") == {"spider": "/", "spider/c.txt": "new c"}

