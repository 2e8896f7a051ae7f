"""End to end: `dvc repro` on a folder of your own (three SQLite databases, no tables.json, no dev
file, one gold query that fails) and on a tiny set in BIRD's layout, with a tiny model and as few
steps as tests/test_pipeline_e2e.py takes on Spider."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dvc_project import QUICK, dvc, new_project
from tiny_model import build_tiny_model
from tiny_owndata import BIRD_DEV, FAILING_GOLD, OWN_QUESTIONS, build_own_data, build_tiny_bird, snapshot

pytestmark = pytest.mark.timeout(900)  # whole dvc repro runs, as in test_pipeline_e2e.py

ALL_STAGES = {"fetch-db", "preprocess", "prepare-model", "quantize-and-train", "predict@base",
              "predict@finetuned", "evaluate", "report"}


def repro(tmp_path: Path, source: Path) -> tuple[Path, str]:
    repo = new_project(tmp_path / "repo", source, build_tiny_model(tmp_path / "tiny_model"), QUICK)
    done = dvc(repo, "repro")
    assert set(re.findall(r"Running stage '([^']+)'", done.stdout)) == ALL_STAGES
    assert "WARNING" not in done.stdout + done.stderr and "ERROR" not in done.stdout + done.stderr
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    return repo, done.stdout


def metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / name).read_text(encoding="utf-8"))


def per_question(repo: Path) -> list[dict]:
    return [json.loads(line) for line in (repo / "outputs/eval/per_question.jsonl").read_text().splitlines()]


def test_repro_on_a_folder_of_your_own(tmp_path):
    source = build_own_data(tmp_path / "my_data")
    before = snapshot(source)
    repo, output = repro(tmp_path, source)

    data = metrics(repo, "data.json")
    assert data["layout"] == "own" and len(data["dev_split_databases"]) == 1
    assert data["train_skipped_gold_error"] + data["dev_skipped_gold_error"] == 1
    assert data["train_examples"] + data["dev_questions"] == len(OWN_QUESTIONS) - 1
    assert f"train.jsonl:{len(OWN_QUESTIONS)} ({FAILING_GOLD[0]}): execution error: no such column" in output
    tables = json.loads((repo / "data/spider/tables.json").read_text(encoding="utf-8"))
    assert sorted(entry["db_id"] for entry in tables) == ["concert", "school", "shop"]

    details = metrics(repo, "eval_details.json")
    assert details["metric"] == "spider" and details["metric_chosen_by"] == "auto: data from a folder of your own"
    scores = metrics(repo, "eval.json")
    assert details["count_all"] == data["dev_questions"] == len(per_question(repo))
    assert {row["db_id"] for row in per_question(repo)} == set(data["dev_split_databases"])
    assert "finetuned_plug_all" in scores and "count_na" not in details  # Spider's rules read every query here
    assert snapshot(source) == before  # the source folder and its databases were only read


def test_repro_on_birds_layout(tmp_path):
    source = build_tiny_bird(tmp_path / "bird")
    before = snapshot(source)
    repo, output = repro(tmp_path, source)

    data = metrics(repo, "data.json")
    assert data["layout"] == "bird" and data["dev_questions"] == len(BIRD_DEV)
    assert data["dev_with_evidence"] == len(BIRD_DEV) - 1 and data["train_with_evidence"] == data["train_examples"]
    assert "dev_split_databases" not in data
    prompt = json.loads((repo / "data/prepared/dev.jsonl").read_text().splitlines()[0])["prompt"][-1]["content"]
    assert f"Evidence: {BIRD_DEV[0][3]}\nQuestion: {BIRD_DEV[0][1]}" in prompt

    details = metrics(repo, "eval_details.json")
    assert details["metric"] == "bird" and details["metric_chosen_by"] == "auto: data from BIRD's layout"
    assert "metric: bird (auto: data from BIRD's layout)" in output
    scores = metrics(repo, "eval.json")
    assert not [key for key in scores if "_plug_" in key]  # BIRD's metric has no plug-value
    rows = per_question(repo)
    assert set(scores) == {"base_exec_all", "finetuned_exec_all"}
    assert details["count_all"] == len(rows) == len(BIRD_DEV)
    assert details["count_na"] == details["hardness_not_rated"] == sum(row["hardness"] == "n/a" for row in rows) > 0
    assert 0 <= details["finetuned_exec_na"] <= 1 and "delta_exec_na" in details
    page = (repo / "outputs/report/index.html").read_text(encoding="utf-8")
    assert page.count('<section class="q"') == len(BIRD_DEV)
    assert snapshot(source) == before
