"""End to end: `dvc repro` on CPU in a temporary git repository, on a tiny Spider-format set
with a tiny model; then edits to params.yaml rerun only the stages that depend on them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tiny_model import build_tiny_model
from tiny_spider import build_tiny_spider

ROOT = Path(__file__).resolve().parents[1]
ALL_STAGES = {"fetch-db", "preprocess", "prepare-model", "quantize-and-train", "predict@base",
              "predict@finetuned", "evaluate"}
QUICK = {
    "train": {"max_steps": 4, "batch_size": 4, "max_length": 192, "logging_steps": 1, "save_steps": 2,
              "warmup_steps": 0, "learning_rate": 5.0e-3,
              # a random tiny model answers nothing yet; the check has its own tests
              "check_generations": False},
    "predict": {"batch_size": 8, "max_new_tokens": 24},
    "eval": {"workers": 1},
}


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               SQLORA_PROGRESS="0", PYTHONPATH=str(repo / "src"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], cwd=repo,
                   check=True, capture_output=True)


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def edit_params(repo: Path, section: str, **values) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> Path:
    """A git + DVC repository with the project's pipeline, pointed at tiny data and a tiny model."""
    work = tmp_path_factory.mktemp("e2e")
    repo = work / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    spider = build_tiny_spider(work / "tiny_spider")
    model = build_tiny_model(work / "tiny_model")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(source=str(spider), sha256="")
    params["model"].update(name_or_path=str(model), sha256="")
    for section, values in QUICK.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("/data/\n/outputs/\n__pycache__/\n")
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pipeline")
    return repo


def test_repro_runs_every_stage_and_writes_metrics(pipeline_repo: Path):
    done = dvc(pipeline_repo, "repro")
    assert stages_run(done.stdout) == ALL_STAGES

    data = json.loads((pipeline_repo / "metrics/data.json").read_text())
    assert data["dev_questions"] == 24 and data["dev_skipped_missing_db"] == 2
    train = json.loads((pipeline_repo / "metrics/train.json").read_text())
    assert train["steps"] == 4 and train["tokens"] > 0 and train["trainable_params"] > 0
    assert train["final_loss"] == train["final_loss"]  # not NaN
    # examples longer than train.max_length are left out, not truncated; most tiny ones fit
    assert train["examples"] + train["skipped_too_long"] == data["train_examples"]
    assert train["examples"] > train["skipped_too_long"]
    losses = (pipeline_repo / "metrics/train_loss.csv").read_text().splitlines()
    assert losses[0] == "step,loss,learning_rate" and len(losses) == 5

    scores = json.loads((pipeline_repo / "metrics/eval.json").read_text())
    assert scores["count_all"] == 24
    for model in ("base", "finetuned", "delta"):
        for mode in ("exec", "plug"):
            for level in ("easy", "medium", "hard", "extra", "all"):
                assert isinstance(scores[f"{model}_{mode}_{level}"], (int, float))
    for variant in ("base", "finetuned"):
        predictions = (pipeline_repo / f"outputs/predictions/{variant}/pred.sql").read_text().splitlines()
        assert len(predictions) == 24
        predict = json.loads((pipeline_repo / f"metrics/predict_{variant}.json").read_text())
        assert predict["questions"] == 24 and 0 <= predict["not_first_candidate"] <= 24
        generations = [json.loads(line) for line in
                       (pipeline_repo / f"outputs/predictions/{variant}/generations.jsonl").read_text().splitlines()]
        candidates = yaml.safe_load((ROOT / "params.yaml").read_text())["predict"]["num_candidates"]
        if candidates > 1:  # the default: a beam of candidates, and the one kept is among them
            assert all(len(g["candidates"]) == candidates and g["generation"] in g["candidates"]
                       for g in generations)
        assert predict["stage_s"] >= predict["load_s"] + predict["generate_s"] - 0.05
    gold = (pipeline_repo / "data/prepared/dev_gold.sql").read_text().splitlines()
    assert len(gold) == 24 and all("\t" in line for line in gold)
    per_question = (pipeline_repo / "outputs/eval/per_question.jsonl").read_text().splitlines()
    assert len(per_question) == 24
    assert {"index", "db_id", "hardness", "finetuned_exec"} <= set(json.loads(per_question[0]))
    assert (pipeline_repo / "outputs/adapter/adapter_config.json").is_file()

    shown = dvc(pipeline_repo, "metrics", "show").stdout
    assert "finetuned_exec_all" in shown
    assert "didn't change" in dvc(pipeline_repo, "status").stdout or \
        "up to date" in dvc(pipeline_repo, "status").stdout


def test_lora_edit_reruns_only_training_finetuned_predict_and_evaluate(pipeline_repo: Path):
    if not (pipeline_repo / "dvc.lock").is_file():
        dvc(pipeline_repo, "repro")
    edit_params(pipeline_repo, "lora", r=8)
    done = dvc(pipeline_repo, "repro")
    ran = stages_run(done.stdout)
    # evaluate reruns only if the new predictions differ (DVC compares their hashes)
    assert {"quantize-and-train", "predict@finetuned"} <= ran <= {"quantize-and-train", "predict@finetuned",
                                                                  "evaluate"}
    for untouched in ("fetch-db", "preprocess", "prepare-model", "predict@base"):
        assert f"'{untouched}' didn't change" in done.stdout


def test_quant_edit_never_reruns_data_stages(pipeline_repo: Path):
    if not (pipeline_repo / "dvc.lock").is_file():
        dvc(pipeline_repo, "repro")
    edit_params(pipeline_repo, "quant", bnb_4bit_quant_type="fp4")
    status = dvc(pipeline_repo, "status").stdout
    changed = set(re.findall(r"^(\S+):\s*$", status, flags=re.M))
    assert {"quantize-and-train", "predict@base"} <= changed
    assert not changed & {"fetch-db", "preprocess", "prepare-model"}
    edit_params(pipeline_repo, "quant", bnb_4bit_quant_type="nf4")


def commit_results(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def test_experiments_show_diff_and_plot_against_the_baseline(pipeline_repo: Path):
    dvc(pipeline_repo, "repro")
    commit_results(pipeline_repo, "baseline results")
    dvc(pipeline_repo, "exp", "run", "-S", "lora.r=4", "-S", "train.learning_rate=0.01")

    shown = dvc(pipeline_repo, "exp", "show", "--no-pager", "--csv").stdout
    header = shown.splitlines()[0].split(",")
    assert "lora.r" in header and "finetuned_exec_all" in header
    assert {"4", "8"} <= {row.split(",")[header.index("lora.r")] for row in shown.splitlines()[1:]}

    diff = json.loads(dvc(pipeline_repo, "metrics", "diff", "--json").stdout or "{}")
    assert "metrics/train.json" in diff and "final_loss" in diff["metrics/train.json"]

    plots = json.loads(dvc(pipeline_repo, "plots", "diff", "--json").stdout)["data"]
    assert {"Training loss", "Execution accuracy by hardness"} <= set(plots)
    for chart in plots.values():  # both runs on one chart
        points = chart[0]["content"]["data"]["values"]
        assert {point["rev"] for point in points} == {"workspace", "HEAD"}


def test_queued_experiments_run_in_parallel_without_clobbering(pipeline_repo: Path):
    import time

    before = (pipeline_repo / "params.yaml").read_text()
    for rank in (2, 6):
        dvc(pipeline_repo, "exp", "run", "--queue", "-S", f"lora.r={rank}", "-n", f"rank-{rank}")
    dvc(pipeline_repo, "queue", "start", "-j", "2")
    deadline = time.time() + 900
    while time.time() < deadline:
        status = dvc(pipeline_repo, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert "Failed" not in status, status + dvc(pipeline_repo, "queue", "logs", "rank-2", check=False).stdout
    shown = json.loads(dvc(pipeline_repo, "exp", "show", "--json").stdout)
    results = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name") in ("rank-2", "rank-6"):
                    data = rev["data"]
                    params = data["params"]["params.yaml"]["data"]
                    results[rev["name"]] = (params["lora"]["r"], data["metrics"]["metrics/train.json"]["data"])
    assert results["rank-2"][0] == 2 and results["rank-6"][0] == 6
    # each experiment trained its own adapter: LoRA size grows with the rank
    assert results["rank-6"][1]["trainable_params"] == 3 * results["rank-2"][1]["trainable_params"]
    assert (pipeline_repo / "params.yaml").read_text() == before  # the workspace is untouched


def test_killed_training_resumes_from_its_last_checkpoint(pipeline_repo: Path):
    import signal
    import time

    edit_params(pipeline_repo, "train", max_steps=10, save_steps=2)
    shutil.rmtree(pipeline_repo / "outputs/checkpoints", ignore_errors=True)  # earlier runs' checkpoint-4
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", SQLORA_PROGRESS="0",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    run = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "quantize-and-train"], cwd=pipeline_repo,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    checkpoint = pipeline_repo / "outputs/checkpoints/checkpoint-4/trainer_state.json"
    deadline = time.time() + 600
    while not checkpoint.is_file() and time.time() < deadline and run.poll() is None:
        time.sleep(0.5)
    assert checkpoint.is_file(), "no checkpoint appeared"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()

    dvc(pipeline_repo, "repro", "quantize-and-train")
    train = json.loads((pipeline_repo / "metrics/train.json").read_text())
    assert train["resumed_from_step"] >= 4 and train["steps"] == 10
    steps = [int(line.split(",")[0]) for line in
             (pipeline_repo / "metrics/train_loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 11))  # one loss per step, none lost or repeated
