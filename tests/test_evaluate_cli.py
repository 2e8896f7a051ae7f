"""python -m sqlora.evaluate: the table, the JSONL and JSON files, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval_fixtures import concert_database, write_questions

ROOT = Path(__file__).resolve().parents[1]

PAIRS = [
    ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),  # easy, right
    ("SELECT name, age FROM singer", "SELECT age, name FROM singer"),  # medium, right
    ("SELECT name FROM singer WHERE age > 20 ORDER BY age LIMIT 3", "SELECT name FROM singer LIMIT 3"),  # hard
    ("SELECT name, age FROM singer UNION SELECT name, age FROM singer", ""),  # extra, empty
    ("SELECT name FROM singer WHERE country = 'France'", "SELECT name FROM singer WHERE country = 'FRANCE'"),
    ("SELECT name FROM singer", "SELEC name FROM singer"),
]


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SQLORA_PROGRESS="0", PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(
        [sys.executable, "-m", "sqlora.evaluate", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    concert_database(tmp_path / "db")
    gold, pred = write_questions(tmp_path, PAIRS)
    return gold, pred, tmp_path / "db"


def test_table_jsonl_and_json(inputs, tmp_path):
    gold, pred, db = inputs
    per_question = tmp_path / "out" / "per_question.jsonl"
    metrics = tmp_path / "out" / "metrics.json"
    done = run_cli("--gold", gold, "--pred", pred, "--db", db, "--per-question", per_question,
                   "--json", metrics, "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["easy", "medium", "hard", "extra", "all"]
    assert lines[1].split() == ["count", "3", "1", "1", "1", "6"]
    assert "EXECUTION ACCURACY" in lines[2]
    assert lines[3].split() == ["execution", "0.333", "1.000", "0.000", "0.000", "0.333"]

    records = [json.loads(line) for line in per_question.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in records] == list(range(6))
    assert [r["hardness"] for r in records[:4]] == ["easy", "medium", "hard", "extra"]
    assert [r["exec"] for r in records] == [1, 1, 0, 0, 0, 0]
    assert records[0]["error"] is None and records[0]["db_id"] == "concert"
    assert records[2]["error"] == "wrong result"
    assert records[3]["error"] == "empty prediction"
    assert records[5]["error"].startswith("syntax error:")
    assert {"index", "db_id", "hardness", "exec", "error", "gold", "pred"} <= set(records[0])

    document = json.loads(metrics.read_text(encoding="utf-8"))
    assert document["all"] == {"count": 6, "exec": pytest.approx(2 / 6)}
    assert document["medium"] == {"count": 1, "exec": 1.0}
    assert document["errors"] == {"wrong result": 2, "empty prediction": 1, "syntax error": 1}


def test_plug_value_flag(inputs, tmp_path):
    gold, pred, db = inputs
    metrics = tmp_path / "metrics.json"
    done = run_cli("--gold", gold, "--pred", pred, "--db", db, "--plug-value", "--json", metrics,
                   "--workers", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    document = json.loads(metrics.read_text(encoding="utf-8"))
    assert document["all"]["exec"] == pytest.approx(3 / 6)
    assert document["settings"]["plug_value"] is True
    assert document["plug_value"]["questions_capped"] == 0


def test_misaligned_files_fail_with_one_line(inputs, tmp_path):
    gold, pred, db = inputs
    pred.write_text("SELECT 1\nSELECT 2\n", encoding="utf-8")
    done = run_cli("--gold", gold, "--pred", pred, "--db", db, cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "6 gold lines" in done.stderr and "2 prediction lines" in done.stderr


@pytest.mark.parametrize("missing", ["gold", "pred", "db"])
def test_missing_paths_fail_with_one_line(inputs, tmp_path, missing):
    paths = dict(zip(("gold", "pred", "db"), inputs))
    paths[missing] = tmp_path / "does-not-exist"
    done = run_cli("--gold", paths["gold"], "--pred", paths["pred"], "--db", paths["db"], cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "not found" in done.stderr
