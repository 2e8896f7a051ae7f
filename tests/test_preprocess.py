"""preprocess: prompt-completion records, dev questions in gold order, skipped questions counted."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from script_modules import one_error_line, read_jsonl
from tiny_spider import DEV, TRAIN, build_tiny_spider

from sqlora.data.prompts import SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parents[1]
STAGE = "stages/preprocess.py"
KNOWN_DEV = [q for q in DEV if q[0] != "missing_db"]
KNOWN_TRAIN = [q for q in TRAIN if q[0] != "ghost_db"]


@pytest.fixture
def preprocess(tiny_spider, tmp_path, run_script):
    """preprocess(**data_params) runs the stage on the tiny release; returns (result, out folder)."""
    project = tmp_path / "project"
    project.mkdir()

    def run(**overrides):
        data = {"source": "unused", "sha256": "", "schema_format": "compact", "value_hints": False,
                "evidence": True, "train_limit": 0, "dev_limit": 0, "dev_fraction": 0.2, "split_seed": 42,
                **overrides}
        (project / "params.yaml").write_text(yaml.safe_dump({"data": data}), encoding="utf-8")
        facts = project / "outputs" / "base_model" / "sqlora_model.json"
        if run.parameters is not None:
            facts.parent.mkdir(parents=True, exist_ok=True)
            facts.write_text(json.dumps({"parameters": run.parameters}), encoding="utf-8")
        result = run_script(STAGE, "--spider", tiny_spider, "--model-facts", facts, "--out", "data/prepared",
                            "--metrics", "metrics/data.json", cwd=project)
        return result, project / "data" / "prepared"
    run.project, run.parameters = project, 135_000_000  # the model's size, as prepare-model records it
    return run


def test_every_gold_query_runs_on_its_database(tmp_path):
    root = build_tiny_spider(tmp_path / "spider")
    for db_id, question, query in TRAIN + DEV:
        path = root / "database" / db_id / f"{db_id}.sqlite"
        if db_id in ("missing_db", "ghost_db"):
            assert not path.exists()
            continue
        with closing(sqlite3.connect(path)) as connection:
            assert connection.execute(query).fetchall(), f"{db_id}: {question} -> no rows"


def test_outputs(preprocess):
    result, out = preprocess()
    assert result.returncode == 0, result.stderr
    assert "skipped 2 (database file missing: missing_db)" in result.stdout

    train = read_jsonl(out / "train.jsonl")
    assert [(r["db_id"], r["question"]) for r in train] == [(d, q) for d, q, _ in KNOWN_TRAIN]
    first = train[0]
    assert set(first) == {"prompt", "completion", "db_id", "question"}
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    assert first["prompt"][0]["content"] == SYSTEM_PROMPT
    assert "singer(singer_id*, name, country, age, is_male)" in first["prompt"][1]["content"]
    assert first["prompt"][1]["content"].endswith(f"Question: {first['question']}\nSQL:")
    assert first["completion"] == [{"role": "assistant", "content": "SELECT count(*) FROM singer"}]
    assert any(r["db_id"] == "missing_db" for r in train)  # schema known, sqlite missing: kept

    dev = read_jsonl(out / "dev.jsonl")
    assert [r["index"] for r in dev] == list(range(len(KNOWN_DEV)))
    assert [(r["db_id"], r["question"], r["gold"]) for r in dev] == KNOWN_DEV
    assert set(dev[0]) == {"index", "db_id", "question", "prompt", "gold"}
    gold = (out / "dev_gold.sql").read_text(encoding="utf-8").splitlines()
    assert gold == [f"{query}\t{db_id}" for db_id, _, query in KNOWN_DEV]

    metrics = json.loads((out.parents[1] / "metrics" / "data.json").read_text(encoding="utf-8"))
    assert metrics == {"layout": "spider", "schema_format": "compact", "train_examples": len(KNOWN_TRAIN),
                       "train_skipped_unknown_db": 1, "train_skipped_gold_error": 0,
                       "dev_questions": len(KNOWN_DEV), "dev_skipped_missing_db": 2,
                       "dev_skipped_unknown_db": 0, "dev_skipped_gold_error": 0,
                       "train_with_value_hints": 0, "dev_with_value_hints": 0,
                       "train_with_evidence": 0, "dev_with_evidence": 0}


def test_limits_take_the_first_questions(preprocess):
    result, out = preprocess(train_limit=5, dev_limit=3)
    assert result.returncode == 0, result.stderr
    assert [r["question"] for r in read_jsonl(out / "train.jsonl")] == [q for _, q, _ in TRAIN[:5]]
    assert [r["question"] for r in read_jsonl(out / "dev.jsonl")] == [q for _, q, _ in KNOWN_DEV[:3]]
    assert len((out / "dev_gold.sql").read_text(encoding="utf-8").splitlines()) == 3


def test_ddl_schema_format(preprocess):
    result, out = preprocess(schema_format="ddl")
    assert result.returncode == 0, result.stderr
    prompt = read_jsonl(out / "dev.jsonl")[0]["prompt"][1]["content"]
    assert "CREATE TABLE singer (singer_id number, name text" in prompt


@pytest.mark.parametrize("parameters, expected", [
    (115_000_000, "compact (auto: a model of 115M parameters)"),
    (300_000_000, "compact (auto: a model of 300M parameters)"),
    (300_000_001, "ddl (auto: a model of 300M parameters)"),
    (509_000_000, "ddl (auto: a model of 509M parameters)"),
])
def test_auto_schema_format_goes_by_the_model_size(preprocess, parameters, expected):
    preprocess.parameters = parameters
    result, out = preprocess(schema_format="auto")
    assert result.returncode == 0, result.stderr
    assert f"schema format: {expected}" in result.stdout
    chosen = expected.split()[0]
    assert json.loads((out / "prompt_format.json").read_text(encoding="utf-8"))["schema_format"] == chosen
    prompt = read_jsonl(out / "dev.jsonl")[0]["prompt"][1]["content"]
    assert ("CREATE TABLE singer" in prompt) == (chosen == "ddl")


def test_auto_schema_format_needs_the_prepared_model(preprocess):
    preprocess.parameters = None
    line = one_error_line(preprocess(schema_format="auto")[0])
    assert "sqlora_model.json not found: run the prepare-model stage first" in line


def test_gold_and_completion_are_one_line(preprocess, tiny_spider):
    for name in ("dev.json", "train_spider.json"):
        path = tiny_spider / name
        questions = json.loads(path.read_text(encoding="utf-8"))
        questions[0]["query"] = "SELECT count(*)\n\tFROM  stadium ;"
        path.write_text(json.dumps(questions), encoding="utf-8")
    result, out = preprocess()
    assert result.returncode == 0, result.stderr
    assert read_jsonl(out / "train.jsonl")[0]["completion"][0]["content"] == "SELECT count(*) FROM stadium"
    assert read_jsonl(out / "dev.jsonl")[0]["gold"] == "SELECT count(*) FROM  stadium ;"
    assert (out / "dev_gold.sql").read_text(encoding="utf-8").splitlines()[0] == \
        "SELECT count(*) FROM  stadium ;\tconcert"


@pytest.mark.parametrize("overrides, expected", [
    ({"schema_format": "yaml"}, "data.schema_format = 'yaml': allowed values are 'auto', 'compact', 'ddl', 'names'"),
    ({"train_limit": -1}, "data.train_limit = -1: must be an integer >= 0"),
    ({"dev_limit": "all"}, "data.dev_limit = 'all': must be an integer"),
    ({"value_hints": "yes"}, "data.value_hints = 'yes': allowed values are true, false"),
])
def test_bad_params(preprocess, overrides, expected):
    assert one_error_line(preprocess(**overrides)[0]) == f"error: {expected}"


def test_missing_train_file(preprocess, tiny_spider):
    (tiny_spider / "train_spider.json").unlink()
    line = one_error_line(preprocess()[0])
    assert "train_spider.json not found" in line


def test_value_hints_name_the_values_a_question_mentions(preprocess):
    result, out = preprocess(value_hints=True)
    assert result.returncode == 0, result.stderr
    dev = read_jsonl(out / "dev.jsonl")
    train = read_jsonl(out / "train.jsonl")
    metrics = json.loads((out.parent.parent / "metrics" / "data.json").read_text())
    with_hints = [r for r in dev + train if "-- values in the question:" in r["prompt"][-1]["content"]]
    assert with_hints and metrics["dev_with_value_hints"] + metrics["train_with_value_hints"] == len(with_hints)
    for record in dev + train:
        user = record["prompt"][-1]["content"]
        assert user.startswith("Database schema:\n") and user.endswith("\nSQL:")


def test_no_value_hints_when_turned_off(preprocess):
    result, out = preprocess(value_hints=False)
    assert result.returncode == 0, result.stderr
    assert not any("-- values in the question:" in r["prompt"][-1]["content"]
                   for r in read_jsonl(out / "dev.jsonl") + read_jsonl(out / "train.jsonl"))


def test_project_defaults(preprocess):
    """The data section of the project's params.yaml as it ships: the schema format by model size
    (compact for the default model), value hints on."""
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["data"]
    assert defaults["value_hints"] is True and defaults["schema_format"] == "auto"
    preprocess.parameters = 115_000_000
    result, out = preprocess(**defaults)
    assert result.returncode == 0, result.stderr
    assert "schema format: compact (auto: a model of 115M parameters), with value hints" in result.stdout
    metrics = json.loads((out.parents[1] / "metrics" / "data.json").read_text(encoding="utf-8"))
    assert metrics["dev_with_value_hints"] > 0 and metrics["train_with_value_hints"] > 0
    france = next(r for r in read_jsonl(out / "train.jsonl") if "from France" in r["question"])
    assert "-- values in the question:" in france["prompt"][-1]["content"]


def test_outputs_are_replaced_whole_and_kept_on_failure(preprocess, tiny_spider):
    result, out = preprocess(dev_limit=3)
    assert result.returncode == 0, result.stderr
    metrics_file = out.parents[1] / "metrics" / "data.json"
    (out / "stale.txt").write_text("from an older run", encoding="utf-8")
    result, out = preprocess(dev_limit=5)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dev.jsonl", "dev_gold.sql", "prompt_format.json", "train.jsonl"]
    assert json.loads(metrics_file.read_text(encoding="utf-8"))["dev_questions"] == 5
    before = {p.name: p.read_bytes() for p in [*out.iterdir(), metrics_file]}

    (tiny_spider / "dev.json").write_text("[{\"db_id\": \"concert\"}]", encoding="utf-8")  # broken
    assert "entry 0 lacks a db_id, question or query" in one_error_line(preprocess(dev_limit=2)[0])
    assert {p.name: p.read_bytes() for p in [*out.iterdir(), metrics_file]} == before
    leftovers = [p for folder in (out.parent, metrics_file.parent) for p in folder.iterdir()
                 if p.name.startswith(".")]
    assert not leftovers
