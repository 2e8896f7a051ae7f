"""End to end with a base model whose tokenizer has no chat template: `dvc repro` on CPU in a
temporary git repository, on the tiny Spider set, with a tiny Gemma3-style model. Training and
prediction use the plain prompt format (see sqlora/prompts.py) instead of crashing on
`apply_chat_template`."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from dvc_project import dvc, new_project
from tiny_model import build_tiny_base_model
from tiny_spider import build_tiny_spider

ROOT = Path(__file__).resolve().parents[1]
# trains and runs DVC stages: minutes on a slow CI, more than the default per-test timeout
pytestmark = pytest.mark.timeout(900)
QUICK = {
    "train": {"max_steps": 3, "batch_size": 4, "max_length": 192, "logging_steps": 1, "save_steps": 50,
              "warmup_steps": 0, "learning_rate": 5.0e-3,
              "check_generations": False},  # a random tiny model answers nothing yet
    "lora": {"r": 4, "alpha": 8},
    "predict": {"batch_size": 8, "max_new_tokens": 12},
    "eval": {"workers": 1},
}


@pytest.fixture(scope="module")
def base_model_repo(tmp_path_factory) -> Path:
    """A git + DVC repository with the project's pipeline, on tiny data and a tiny base model."""
    work = tmp_path_factory.mktemp("base_e2e")
    return new_project(work / "repo", build_tiny_spider(work / "tiny_spider"),
                       build_tiny_base_model(work / "tiny_gemma3"), QUICK)


def test_repro_with_a_base_model_without_chat_template(base_model_repo: Path):
    repo = base_model_repo
    done = dvc(repo, "repro")
    assert set(re.findall(r"Running stage '([^']+)'", done.stdout)) == {
        "fetch-db", "preprocess", "prepare-model", "quantize-and-train", "predict@base", "predict@finetuned",
        "evaluate", "report"}

    config = json.loads((repo / "outputs/base_model/config.json").read_text())
    assert config["model_type"] == "gemma3_text"
    tokenizer_config = json.loads((repo / "outputs/base_model/tokenizer_config.json").read_text())
    assert not tokenizer_config.get("chat_template")
    assert not (repo / "outputs/base_model/chat_template.jinja").exists()

    train = {**json.loads((repo / "metrics/train.json").read_text()),
             **json.loads((repo / "metrics/train_details.json").read_text())}
    assert train["steps"] == 3 and train["tokens"] > 0 and train["examples"] > 0
    assert math.isfinite(train["final_loss"]) and math.isfinite(train["mean_loss"])
    assert (repo / "outputs/adapter/adapter_config.json").is_file()
    # TRL added no chat template: the fine-tuned model is asked in the plain format it learned
    adapter_tokenizer = json.loads((repo / "outputs/adapter/tokenizer_config.json").read_text())
    assert not adapter_tokenizer.get("chat_template")
    assert not (repo / "outputs/adapter/chat_template.jinja").exists()

    data = json.loads((repo / "metrics/data.json").read_text())
    questions = data["dev_questions"]
    for variant in ("base", "finetuned"):
        predictions = (repo / f"outputs/predictions/{variant}/pred.sql").read_text().splitlines()
        assert len(predictions) == questions
        predict = json.loads((repo / f"metrics/predict_{variant}_details.json").read_text())
        assert predict["questions"] == questions
    scores = json.loads((repo / "metrics/eval_details.json").read_text())
    assert scores["count_all"] == questions
