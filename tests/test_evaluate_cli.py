"""python -m sqlora.eval: the table, the JSONL and JSON files, and one-line errors."""

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
        [sys.executable, "-m", "sqlora.eval", *map(str, args)],
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


# ---------------------------------------------------------------- stages/evaluate.py

STAGE_PAIRS = {  # name -> predictions for the gold of PAIRS
    "base": [pred for _, pred in PAIRS],
    "finetuned": [
        "SELECT count(*) FROM singer",
        "SELECT name, age FROM singer",
        "SELECT name FROM singer WHERE age > 20 ORDER BY age LIMIT 3",
        "SELECT name, age FROM singer UNION SELECT name, age FROM singer",
        "SELECT name FROM singer WHERE country = 'France'",
        "SELECT nope FROM singer",
    ],
}
LEVELS = ["easy", "medium", "hard", "extra", "all"]


def stage_inputs(tmp_path: Path, **eval_params) -> dict[str, Path]:
    import yaml

    concert_database(tmp_path / "db")
    gold, _ = write_questions(tmp_path, PAIRS)
    paths = {"gold": gold, "db": tmp_path / "db"}
    for name, preds in STAGE_PAIRS.items():
        paths[name] = tmp_path / f"{name}.sql"
        paths[name].write_text("".join(p + "\n" for p in preds), encoding="utf-8")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["eval"].update(eval_params)
    paths["params"] = tmp_path / "params.yaml"
    paths["params"].write_text(yaml.safe_dump(params), encoding="utf-8")
    return paths


def run_stage_script(run_script, tmp_path: Path, paths: dict[str, Path]):
    return run_script("stages/evaluate.py", "--gold", paths["gold"], "--db", paths["db"],
                      "--pred", f"base={paths['base']}", "--pred", f"finetuned={paths['finetuned']}",
                      "--metrics", tmp_path / "metrics" / "eval.json",
                      "--details", tmp_path / "metrics" / "eval_details.json",
                      "--plot", tmp_path / "metrics" / "accuracy_by_hardness.csv",
                      "--out", tmp_path / "outputs" / "eval", "--params", paths["params"], cwd=tmp_path)


def test_stage_writes_metrics_plot_and_per_question(run_script, tmp_path):
    from sqlora.eval.accuracy import evaluate

    paths = stage_inputs(tmp_path, workers=2)
    done = run_stage_script(run_script, tmp_path, paths)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("EXECUTION ACCURACY") == 4
    for title in ("base (strict", "base (plug-value", "finetuned (strict", "finetuned (plug-value"):
        assert title in done.stdout

    metrics = json.loads((tmp_path / "metrics" / "eval.json").read_text(encoding="utf-8"))
    details = json.loads((tmp_path / "metrics" / "eval_details.json").read_text(encoding="utf-8"))
    # the metrics, what experiments are compared by: each model's accuracy over all questions
    assert list(metrics) == [f"{name}_{mode}_all" for name in STAGE_PAIRS for mode in ("exec", "plug")]
    expected_keys = [f"{name}_{mode}_{level}" for name in STAGE_PAIRS for mode in ("exec", "plug")
                     for level in LEVELS[:-1]]
    expected_keys += [f"delta_{mode}_{level}" for mode in ("exec", "plug") for level in LEVELS]
    expected_keys += [f"count_{level}" for level in LEVELS]
    assert details["metric"] == "spider" and details["questions"] == len(paths["gold"].read_text().splitlines())
    assert list(details)[-len(expected_keys):] == expected_keys
    scores = {**metrics, **details}
    for name in STAGE_PAIRS:
        for mode, plug_value in (("exec", False), ("plug", True)):
            result = evaluate(paths["gold"], paths[name], paths["db"], plug_value=plug_value, workers=1)
            for level in LEVELS:
                assert scores[f"{name}_{mode}_{level}"] == round(result.scores[level]["exec"], 4)
                assert scores[f"count_{level}"] == result.scores[level]["count"]
    for mode in ("exec", "plug"):
        for level in LEVELS:
            difference = scores[f"finetuned_{mode}_{level}"] - scores[f"base_{mode}_{level}"]
            assert scores[f"delta_{mode}_{level}"] == round(difference, 4)
    assert metrics["base_exec_all"] == 0.3333 and metrics["base_plug_all"] == 0.5
    assert metrics["finetuned_exec_all"] == 0.8333 and details["delta_exec_all"] == 0.5

    plot = (tmp_path / "metrics" / "accuracy_by_hardness.csv").read_bytes().decode("utf-8")
    assert plot.split("\r\n")[0] == "bar,model,hardness,exec"
    assert plot.split("\r\n")[1:3] == [f"base easy,base,easy,{details['base_exec_easy']}",
                                       f"base medium,base,medium,{details['base_exec_medium']}"]
    assert plot.count("\r\n") == 11

    rows = [json.loads(line) for line in
            (tmp_path / "outputs" / "eval" / "per_question.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["index"] for row in rows] == list(range(6))
    assert list(rows[0]) == ["index", "db_id", "hardness", "base_exec", "base_exec_error", "base_plug",
                             "base_plug_error", "finetuned_exec", "finetuned_exec_error", "finetuned_plug",
                             "finetuned_plug_error"]
    assert rows[4]["base_exec"] == 0 and rows[4]["base_plug"] == 1 and rows[4]["base_exec_error"] == "wrong result"
    assert rows[5]["finetuned_exec_error"].startswith("execution error: no such column")
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["eval"]  # no staging left
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["accuracy_by_hardness.csv", "eval.json",
                                                                       "eval_details.json"]


def test_a_failed_stage_leaves_the_previous_outputs_as_they_were(run_script, tmp_path):
    paths = stage_inputs(tmp_path)
    old = {tmp_path / "metrics" / "eval.json": "{}\n", tmp_path / "metrics" / "accuracy_by_hardness.csv": "old\n",
           tmp_path / "outputs" / "eval" / "per_question.jsonl": "old\n"}
    for path, text in old.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    paths["finetuned"].write_text("SELECT 1\n", encoding="utf-8")  # the second file does not pair up
    done = run_stage_script(run_script, tmp_path, paths)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "1 prediction lines" in done.stderr
    for path, text in old.items():
        assert path.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["eval"]
    assert sorted(p.name for p in (tmp_path / "outputs" / "eval").iterdir()) == ["per_question.jsonl"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("timeout", 0, "eval.timeout = 0"),
        ("timeout", -1.5, "eval.timeout = -1.5"),
        ("timeout", "fast", "eval.timeout = 'fast'"),
        ("workers", -1, "eval.workers = -1"),
        ("workers", 2.5, "eval.workers = 2.5"),
        ("keep_distinct", "maybe", "eval.keep_distinct = 'maybe'"),
        ("keep_distinct", None, "eval.keep_distinct"),
    ],
)
def test_bad_eval_params_are_one_error_line(run_script, tmp_path, key, value, message):
    paths = stage_inputs(tmp_path, **{key: value})
    done = run_stage_script(run_script, tmp_path, paths)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "outputs").exists()


def test_a_missing_eval_section_is_one_error_line(run_script, tmp_path):
    import yaml

    paths = stage_inputs(tmp_path)
    params = yaml.safe_load(paths["params"].read_text(encoding="utf-8"))
    del params["eval"]
    paths["params"].write_text(yaml.safe_dump(params), encoding="utf-8")
    done = run_stage_script(run_script, tmp_path, paths)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: ") and "'eval'" in done.stderr
