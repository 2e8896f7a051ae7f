"""Tiny SQLite databases and input files for the evaluator's tests."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

SPIDER_ZIP_VARIABLE = "SQLORA_SPIDER_ZIP"

SINGERS = [
    (1, "Joe Sharp", "Netherlands", 52, "x"),
    (2, "Timbaland", "United States", 32, "y"),
    (3, "Justin Brown", "France", 29, "z"),
    (4, "Rose White", "France", 41, None),
    (5, "John Nizinik", "France", 43, "w"),
    (6, "Zoë 東京", "Japan", 25, "ü"),
]


def make_database(path: Path, script: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    connection.executescript(script)
    connection.commit()
    connection.close()
    return path


def concert_database(db_dir: Path, db_id: str = "concert", singers=SINGERS, numbers: int = 2000) -> Path:
    """db_dir/<db_id>/<db_id>.sqlite with a singer table and a numbers table (1..numbers)."""
    path = db_dir / db_id / f"{db_id}.sqlite"
    make_database(
        path,
        f"""
        CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER, note TEXT);
        CREATE TABLE numbers (n INTEGER);
        WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {numbers})
        INSERT INTO numbers SELECT n FROM c;
        """,
    )
    connection = sqlite3.connect(path)
    connection.executemany("INSERT INTO singer VALUES (?, ?, ?, ?, ?)", singers)
    connection.commit()
    connection.close()
    return path


def write_questions(folder: Path, pairs: list[tuple[str, str]], db_id: str = "concert") -> tuple[Path, Path]:
    """gold.sql (SQL<TAB>db_id) and pred.sql (one SQL per line) from (gold, pred) pairs."""
    gold = folder / "gold.sql"
    pred = folder / "pred.sql"
    gold.write_text("".join(f"{g}\t{db_id}\n" for g, _ in pairs), encoding="utf-8")
    pred.write_text("".join(f"{p}\n" for _, p in pairs), encoding="utf-8")
    return gold, pred


def folder_digest(folder: Path) -> dict[str, str]:
    """Name -> sha256 of every file under folder (to prove nothing was written)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def spider_zip_path() -> Path:
    """The official spider_data.zip named by $SQLORA_SPIDER_ZIP; skips the test when it is unset
    (and fails it when it names no file: a mistyped path should not pass as a skip)."""
    value = os.environ.get(SPIDER_ZIP_VARIABLE, "").strip()
    if not value:
        pytest.skip(f"set {SPIDER_ZIP_VARIABLE} to the path of Spider's spider_data.zip to run this test")
    path = Path(value).expanduser()
    if not path.is_file():
        pytest.fail(f"{SPIDER_ZIP_VARIABLE}={value}: no such file")
    return path
