"""End to end: `dvc repro` on CPU in a temporary git repository, on a tiny Spider-format set
with a tiny model; then edits to params.yaml rerun only the stages that depend on them, failed
runs keep the last good outputs, and a teammate's `dvc pull` leaves nothing to rerun.

The repository starts as a clone of the project does: with the reference run's metrics/
committed, so `dvc metrics diff` compares the tiny run with them."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from dvc_project import QUICK, dvc, dvc_env, git, new_project
from tiny_model import build_tiny_model
from tiny_spider import build_tiny_spider, zip_tiny_spider

ROOT = Path(__file__).resolve().parents[1]
# trains and runs DVC stages: minutes on a slow CI, more than the default per-test timeout
pytestmark = pytest.mark.timeout(900)
ALL_STAGES = {"fetch-db", "preprocess", "prepare-model", "quantize-and-train", "predict@base",
              "predict@finetuned", "evaluate", "report"}


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def changed_stages(repo: Path) -> set[str]:
    """The stages `dvc status` lists as changed."""
    return set(re.findall(r"^(\S+):\s*$", dvc(repo, "status").stdout, flags=re.M))


def up_to_date(repo: Path) -> bool:
    return "Data and pipelines are up to date" in dvc(repo, "status").stdout


def snapshot(repo: Path, *paths: str) -> dict[str, bytes]:
    """Every file under the given files and folders, with its contents."""
    found = {}
    for path in map(repo.joinpath, paths):
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            found[file.relative_to(repo).as_posix()] = file.read_bytes()
    assert found, paths
    return found


def strict_json(path: Path):
    """JSON as the standard has it: NaN and Infinity (which json.dumps writes by default) fail."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def edit_params(repo: Path, section: str, **values) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> Path:
    """A git + DVC repository with the project's pipeline, pointed at tiny data and a tiny model;
    its first commit holds, like the project's, the reference run's metrics/."""
    work = tmp_path_factory.mktemp("e2e")
    return new_project(work / "repo", build_tiny_spider(work / "tiny_spider"), build_tiny_model(work / "tiny_model"),
                       QUICK)


LEVELS = ("easy", "medium", "hard", "extra")


def test_repro_runs_every_stage_and_writes_metrics(pipeline_repo: Path):
    reference = strict_json(ROOT / "metrics/eval.json")
    reference_train = strict_json(ROOT / "metrics/train.json")
    done = dvc(pipeline_repo, "repro")
    assert stages_run(done.stdout) == ALL_STAGES
    assert "WARNING" not in done.stdout + done.stderr and "ERROR" not in done.stdout + done.stderr

    # every metrics file is standard JSON: no NaN or Infinity
    metrics = {path.name: strict_json(path) for path in (pipeline_repo / "metrics").glob("*.json")}
    assert set(metrics) == {"data.json", "train.json", "train_details.json", "predict_base.json",
                            "predict_base_details.json", "predict_finetuned.json", "predict_finetuned_details.json",
                            "eval.json", "eval_details.json"}
    assert metrics["eval_details.json"]["metric"] == "spider"
    assert metrics["eval_details.json"]["metric_chosen_by"] == "auto: data from a Spider release"

    data = metrics["data.json"]
    assert data["dev_questions"] == 24 and data["dev_skipped_missing_db"] == 2
    train = {**metrics["train.json"], **metrics["train_details.json"]}
    assert train["base_weights_mb"] > 0 and train["compute_dtype"] == "float32"
    assert train["steps"] == 4 and train["tokens"] > 0 and train["trainable_params"] > 0
    # examples longer than train.max_length are left out, not truncated; most tiny ones fit
    assert train["examples"] + train["skipped_too_long"] == data["train_examples"]
    assert train["examples"] > train["skipped_too_long"]
    losses = (pipeline_repo / "metrics/train_loss.csv").read_text().splitlines()
    assert losses[0] == "step,loss,learning_rate" and len(losses) == 5
    assert [int(line.split(",")[0]) for line in losses[1:]] == [1, 2, 3, 4]
    assert train["final_loss"] == pytest.approx(float(losses[-1].split(",")[1]), abs=1e-5)

    scores = {**metrics["eval.json"], **metrics["eval_details.json"]}
    per_question = [json.loads(line) for line in
                    (pipeline_repo / "outputs/eval/per_question.jsonl").read_text().splitlines()]
    assert len(per_question) == 24 and [q["index"] for q in per_question] == list(range(24))
    assert {"index", "db_id", "hardness", "finetuned_exec"} <= set(per_question[0])
    # counts: per hardness as in per_question.jsonl, summing to all
    for level in LEVELS:
        assert scores[f"count_{level}"] == sum(q["hardness"] == level for q in per_question)
    assert sum(scores[f"count_{level}"] for level in LEVELS) == scores["count_all"] == 24
    for model in ("base", "finetuned"):
        for mode in ("exec", "plug"):
            for level in (*LEVELS, "all"):
                key = f"{model}_{mode}_{level}"
                right = [q[f"{model}_{mode}"] for q in per_question if level == "all" or q["hardness"] == level]
                assert 0 <= scores[key] <= 1
                assert scores[key] == pytest.approx(sum(right) / len(right) if right else 0.0, abs=5e-5), key
                # the delta is finetuned minus base, key by key
                delta = scores[f"finetuned_{mode}_{level}"] - scores[f"base_{mode}_{level}"]
                assert scores[f"delta_{mode}_{level}"] == pytest.approx(delta, abs=1.5e-4)
    with (pipeline_repo / "metrics/accuracy_by_hardness.csv").open(newline="") as f:
        bars = list(csv.DictReader(f))
    assert [(row["model"], row["hardness"]) for row in bars] == \
        [(model, level) for model in ("base", "finetuned") for level in (*LEVELS, "all")]
    assert all(float(row["exec"]) == scores[f"{row['model']}_exec_{row['hardness']}"] for row in bars)

    gold = (pipeline_repo / "data/prepared/dev_gold.sql").read_text().splitlines()
    assert len(gold) == 24 and all("\t" in line for line in gold)
    candidates = yaml.safe_load((ROOT / "params.yaml").read_text())["predict"]["num_candidates"]
    for variant in ("base", "finetuned"):
        predictions = (pipeline_repo / f"outputs/predictions/{variant}/pred.sql").read_text().splitlines()
        assert len(predictions) == 24
        predict = {**metrics[f"predict_{variant}.json"], **metrics[f"predict_{variant}_details.json"]}
        assert predict["questions"] == 24 and 0 <= predict["not_first_candidate"] <= 24
        assert predict["empty_predictions"] == sum(1 for sql in predictions if not sql.strip())
        generations = [json.loads(line) for line in
                       (pipeline_repo / f"outputs/predictions/{variant}/generations.jsonl").read_text().splitlines()]
        assert [g["db_id"] for g in generations] == [line.rsplit("\t", 1)[1] for line in gold]
        assert [g["sql"] for g in generations] == predictions
        if candidates > 1:  # the default: a beam of candidates, and the one kept is among them
            assert all(len(g["candidates"]) == candidates and g["generation"] in g["candidates"]
                       for g in generations)
            assert predict["not_first_candidate"] == sum(1 for g in generations if g["candidate"])
        stage_s = predict[f"{variant}_predict_s"]
        assert stage_s >= predict["load_s"] + predict["generate_s"] - 0.05
        # ready: the stage's start to its first batch, so after the load and before the end
        assert predict["load_s"] <= predict["ready_s"] <= stage_s
    assert (pipeline_repo / "outputs/adapter/adapter_config.json").is_file()
    page = (pipeline_repo / "outputs/report/index.html").read_text(encoding="utf-8")
    assert [int(i) for i in re.findall(r'<section class="q" data-question="(\d+)"', page)] == list(range(24))

    shown = dvc(pipeline_repo, "metrics", "show").stdout
    assert "finetuned_exec_all" in shown
    assert up_to_date(pipeline_repo)

    # metrics/ is git's (cache: false): the run shows up as changes to the committed reference
    status = git(pipeline_repo, "status", "--porcelain", "--untracked-files=all")
    assert " M metrics/eval.json" in status.splitlines()
    assert not [line for line in status.splitlines() if line.startswith("??") and "metrics/" in line]
    assert not (pipeline_repo / "metrics/.gitignore").exists()
    # the first `dvc metrics diff` puts the run beside the published one
    diff = dvc(pipeline_repo, "metrics", "diff", "--json")
    assert "failed to load" not in diff.stdout + diff.stderr.lower()
    changes = json.loads(diff.stdout)
    assert changes["metrics/eval.json"]["finetuned_exec_all"]["old"] == reference["finetuned_exec_all"]
    assert changes["metrics/eval.json"]["finetuned_exec_all"]["new"] == scores["finetuned_exec_all"]
    assert "metrics/data.json" not in changes and "metrics/eval_details.json" not in changes  # counts, no metrics
    assert changes["metrics/train.json"]["runtime_s"]["old"] == reference_train["runtime_s"]
    assert "metrics/train_details.json" not in changes  # details are no metrics
    plots = json.loads(dvc(pipeline_repo, "plots", "diff", "--json").stdout)
    assert not plots.get("errors"), plots.get("errors")
    for chart in plots["data"].values():
        assert {point["rev"] for point in chart[0]["content"]["data"]["values"]} == {"workspace", "HEAD"}


def corrupt_zip(folder: Path) -> Path:
    """The tiny release zipped, 400 bytes in its middle inverted: unzipping it fails (zlib.error)."""
    archive = zip_tiny_spider(build_tiny_spider(folder / "release"), folder / "corrupt.zip")
    data = bytearray(archive.read_bytes())
    middle = len(data) // 2 - 200
    data[middle:middle + 400] = bytes(b ^ 0xFF for b in data[middle:middle + 400])
    archive.write_bytes(bytes(data))
    return archive


def slip_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("spider_data/tables.json", "[]")
        zf.writestr("../../evil.txt", "gotcha")
    return path


def test_failed_runs_keep_the_last_good_outputs(pipeline_repo: Path, tmp_path: Path):
    """DVC would delete a stage's outputs before running it; persist: true keeps them, and the
    scripts swap new outputs in only when complete. So a failed run changes nothing."""
    if not (pipeline_repo / "dvc.lock").is_file():
        dvc(pipeline_repo, "repro")
    params = (pipeline_repo / "params.yaml").read_text()
    lock = (pipeline_repo / "dvc.lock").read_text()
    data = snapshot(pipeline_repo, "data/spider", "data/prepared", "metrics/data.json")
    trained = snapshot(pipeline_repo, "outputs/adapter", "metrics/train.json", "metrics/train_loss.csv")

    # a damaged zip, through `dvc exp run -S` as a user would
    failed = dvc(pipeline_repo, "exp", "run", "-S", f"data.source={corrupt_zip(tmp_path)}", check=False)
    assert failed.returncode != 0
    assert "is corrupt: damaged data inside the zip" in failed.stdout + failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    assert snapshot(pipeline_repo, "data/spider", "data/prepared", "metrics/data.json") == data
    status = dvc(pipeline_repo, "status").stdout
    assert "changed outs" not in status and "deleted" not in status, status  # params changed, that's all
    (pipeline_repo / "params.yaml").write_text(params)

    # a zip that climbs out of its folder: refused, nothing written anywhere
    edit_params(pipeline_repo, "data", source=str(slip_zip(tmp_path / "slip.zip")))
    failed = dvc(pipeline_repo, "repro", check=False)
    assert failed.returncode != 0 and "unsafe zip entry '../../evil.txt'" in failed.stdout + failed.stderr
    assert not list(pipeline_repo.parent.rglob("evil.txt")) and not (tmp_path.parent / "evil.txt").exists()
    assert snapshot(pipeline_repo, "data/spider", "data/prepared", "metrics/data.json") == data
    (pipeline_repo / "params.yaml").write_text(params)

    # a training that fails (here at once, on a LoRA rank of 0)
    failed = dvc(pipeline_repo, "exp", "run", "-S", "lora.r=0", check=False)
    assert failed.returncode != 0 and "lora.r = 0" in failed.stdout + failed.stderr
    assert snapshot(pipeline_repo, "outputs/adapter", "metrics/train.json", "metrics/train_loss.csv") == trained
    status = dvc(pipeline_repo, "status").stdout
    assert "changed outs" not in status and "deleted" not in status, status  # params changed, that's all
    (pipeline_repo / "params.yaml").write_text(params)

    assert (pipeline_repo / "dvc.lock").read_text() == lock
    assert up_to_date(pipeline_repo)


def test_pull_in_a_fresh_clone_reruns_nothing(pipeline_repo: Path, tmp_path: Path):
    """A teammate clones, pulls, and finds the pipeline up to date: no output DVC cannot pull."""
    if not (pipeline_repo / "dvc.lock").is_file():
        dvc(pipeline_repo, "repro")
    assert up_to_date(pipeline_repo)
    dvc(pipeline_repo, "remote", "add", "-d", "store", str(tmp_path / "store"))
    dvc(pipeline_repo, "push")
    git(pipeline_repo, "add", "-A")
    git(pipeline_repo, "commit", "-qm", "results, and where their data is")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(pipeline_repo), str(clone))
    dvc(clone, "pull")
    assert (clone / "outputs/adapter/adapter_config.json").is_file()
    assert snapshot(clone, "data/prepared", "outputs/eval") == snapshot(pipeline_repo, "data/prepared", "outputs/eval")
    assert up_to_date(clone), dvc(clone, "status").stdout
    dry = dvc(clone, "repro", "--dry")
    assert stages_run(dry.stdout) == set(), dry.stdout


def test_lora_edit_reruns_only_training_finetuned_predict_and_evaluate(pipeline_repo: Path):
    if not (pipeline_repo / "dvc.lock").is_file():
        dvc(pipeline_repo, "repro")
    edit_params(pipeline_repo, "lora", r=8)
    done = dvc(pipeline_repo, "repro")
    ran = stages_run(done.stdout)
    # evaluate reruns only if the new predictions differ (DVC compares their hashes); the report
    # shows the LoRA settings
    assert {"quantize-and-train", "predict@finetuned", "report"} <= ran <= {
        "quantize-and-train", "predict@finetuned", "evaluate", "report"}
    for untouched in ("fetch-db", "preprocess", "prepare-model", "predict@base"):
        assert f"'{untouched}' didn't change" in done.stdout


def test_quant_edit_never_reruns_data_stages(pipeline_repo: Path):
    if not (pipeline_repo / "dvc.lock").is_file():
        dvc(pipeline_repo, "repro")
    edit_params(pipeline_repo, "quant", bnb_4bit_quant_type="fp4")
    changed = changed_stages(pipeline_repo)
    assert {"quantize-and-train", "predict@base"} <= changed
    assert not changed & {"fetch-db", "preprocess", "prepare-model"}
    edit_params(pipeline_repo, "quant", bnb_4bit_quant_type="nf4")


def test_train_edit_reruns_training_finetuned_predict_and_evaluate(pipeline_repo: Path):
    if not (pipeline_repo / "dvc.lock").is_file():
        dvc(pipeline_repo, "repro")
    before = (pipeline_repo / "params.yaml").read_text()
    edit_params(pipeline_repo, "train", learning_rate=2.0e-3)
    assert changed_stages(pipeline_repo) == {"quantize-and-train", "report"}  # the report shows the rate
    # what a repro would run: training, and (as its adapter changes) all that depends on it
    dry = dvc(pipeline_repo, "repro", "--dry", "--force-downstream").stdout
    assert stages_run(dry) == {"quantize-and-train", "predict@finetuned", "evaluate", "report"}
    for untouched in ("fetch-db", "preprocess", "prepare-model", "predict@base"):
        assert f"'{untouched}' didn't change" in dry
    (pipeline_repo / "params.yaml").write_text(before)


def test_model_edit_reruns_every_stage_but_fetch_db(pipeline_repo: Path):
    """preprocess depends on the prepared model: `data.schema_format: auto` goes by its size."""
    if not (pipeline_repo / "dvc.lock").is_file():
        dvc(pipeline_repo, "repro")
    before = (pipeline_repo / "params.yaml").read_text()
    edit_params(pipeline_repo, "model", trust_remote_code=True)
    dry = dvc(pipeline_repo, "repro", "--dry", "--force-downstream").stdout
    assert stages_run(dry) == ALL_STAGES - {"fetch-db"}
    assert "'fetch-db' didn't change" in dry
    (pipeline_repo / "params.yaml").write_text(before)


def commit_results(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def test_experiments_show_diff_and_plot_against_the_baseline(pipeline_repo: Path):
    dvc(pipeline_repo, "repro")
    commit_results(pipeline_repo, "baseline results")
    ran = stages_run(dvc(pipeline_repo, "exp", "run", "-S", "lora.r=4", "-S", "train.learning_rate=0.01").stdout)
    # evaluate reruns only if the new predictions differ (DVC compares their hashes)
    assert {"quantize-and-train", "predict@finetuned", "report"} <= ran <= {
        "quantize-and-train", "predict@finetuned", "evaluate", "report"}

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


def stop_queue_workers(repo: Path) -> None:
    """`dvc queue stop`, then, where /proc shows it (Linux), end a worker that missed it."""
    import signal
    import time

    dvc(repo, "queue", "stop", check=False)
    time.sleep(2)
    for pid_file in (repo / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            if b"queue-worker" in Path(f"/proc/{pid}/cmdline").read_bytes():  # still that worker
                os.kill(pid, signal.SIGTERM)
        except (ValueError, OSError):  # gone, or no /proc here
            pass


def test_queued_experiments_run_in_parallel_without_clobbering(pipeline_repo: Path):
    import time

    before = (pipeline_repo / "params.yaml").read_text()
    for rank in (2, 6):
        dvc(pipeline_repo, "exp", "run", "--queue", "-S", f"lora.r={rank}", "-n", f"rank-{rank}")
    # The workers run on in the background. Given our pipes, one that misses DVC's shutdown
    # message (treeverse/dvc#10427) would keep this call waiting for its end; seen once in CI.
    subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=pipeline_repo,
                   env=dvc_env(pipeline_repo), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=300)
    try:
        deadline = time.time() + 900
        while time.time() < deadline:
            status = dvc(pipeline_repo, "queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(5)
    finally:
        stop_queue_workers(pipeline_repo)
    assert "Failed" not in status, status + dvc(pipeline_repo, "queue", "logs", "rank-2", check=False).stdout
    shown = json.loads(dvc(pipeline_repo, "exp", "show", "--json").stdout)
    results = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name") in ("rank-2", "rank-6"):
                    data = rev["data"]
                    params = data["params"]["params.yaml"]["data"]
                    results[rev["name"]] = (params["lora"]["r"], data["outs"]["outputs/adapter"]["hash"],
                                            data["metrics"]["metrics/train.json"]["data"])
    assert results["rank-2"][0] == 2 and results["rank-6"][0] == 6
    # each experiment trained and measured its own adapter
    assert results["rank-2"][1] != results["rank-6"][1]
    assert all(result[2]["tokens_per_s"] > 0 for result in results.values())
    assert (pipeline_repo / "params.yaml").read_text() == before  # the workspace is untouched


def test_killed_training_resumes_from_its_last_checkpoint(pipeline_repo: Path):
    import signal
    import time

    edit_params(pipeline_repo, "train", max_steps=10, save_steps=2)
    shutil.rmtree(pipeline_repo / "outputs/checkpoints", ignore_errors=True)  # earlier runs' checkpoint-4
    run = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "quantize-and-train"], cwd=pipeline_repo,
                           env=dvc_env(pipeline_repo), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    checkpoint = pipeline_repo / "outputs/checkpoints/checkpoint-4/trainer_state.json"
    deadline = time.time() + 600
    while not checkpoint.is_file() and time.time() < deadline and run.poll() is None:
        time.sleep(0.5)
    assert checkpoint.is_file(), "no checkpoint appeared"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()

    dvc(pipeline_repo, "repro", "quantize-and-train")
    train = json.loads((pipeline_repo / "metrics/train_details.json").read_text())
    assert train["resumed_from_step"] >= 4 and train["steps"] == 10
    steps = [int(line.split(",")[0]) for line in
             (pipeline_repo / "metrics/train_loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 11))  # one loss per step, none lost or repeated
