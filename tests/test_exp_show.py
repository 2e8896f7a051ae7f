"""`dvc exp show` over the project's own dvc.yaml and params.yaml, with three experiments: which
columns it shows, and how wide its table is. The stages' commands are replaced by a script that
writes each stage's outputs (the committed reference run's metrics, nudged by the parameters) at
once, so nothing heavy runs; dependencies, parameters and metrics are the pipeline's own."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_project import dvc, dvc_env, git

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)  # the fixture runs dvc repro and three dvc exp runs
EXPERIMENTS = ("lora.r=8", "lora.r=16", "lora.r=32")
# what people compare runs by: these and nothing else are DVC metrics
METRICS = {"final_loss", "runtime_s", "tokens_per_s", "peak_memory_mb", "base_predict_s", "base_predict_peak_mb",
           "finetuned_predict_s", "finetuned_predict_peak_mb", "base_exec_all", "base_plug_all",
           "finetuned_exec_all", "finetuned_plug_all"}
# each model's accuracy over all questions, strict and plug-value: the first metrics columns
ACCURACY = ["base_exec_all", "base_plug_all", "finetuned_exec_all", "finetuned_plug_all"]
# the table the README shows: the parameters and metrics that differ, without the dependencies'
# hashes (every dependency is a path, and no metric or parameter name holds a /)
FITTING = ("--only-changed", "--drop", ".*/")
# the same for a terminal 160 columns wide: without the predict stages' time and memory too
NARROW = ("--only-changed", "--drop", ".*/|.*_predict_")
TERMINAL = 160

FAKE_STAGE = '''
import hashlib, json, shutil, sys
from pathlib import Path
import yaml
plan = json.loads(Path("fake_stages.json").read_text())[sys.argv[1]]
params = yaml.safe_load(Path("params.yaml").read_text())


def value(key):
    found = params
    for part in key.split("."):
        found = found[part]
    return found


def text(dep):
    path = Path(dep) / "made" if Path(dep).is_dir() else Path(dep)
    return path.read_text() if path.is_file() else ""


# what the stage's outputs depend on: its parameters and its inputs' contents
inputs = {dep: text(dep) for dep in plan["deps"]}
salt = json.dumps([sys.argv[1], [value(key) for key in plan["params"]], inputs], sort_keys=True)


def nudge(key):
    """A metric of one model (base_..., finetuned_...) moves with that model's inputs only."""
    model = key.split("_")[0]
    own = [content for dep, content in inputs.items() if f"/{model}/" in dep]
    seed = key + ("".join(own) if own else salt)
    return 1 + int(hashlib.sha256(seed.encode()).hexdigest()[:4], 16) % 200 / 1000


made = hashlib.sha256(salt.encode()).hexdigest()
for folder in plan["folders"]:
    shutil.rmtree(folder, ignore_errors=True)
    Path(folder).mkdir(parents=True)
    Path(folder, "made").write_text(made)
for path in plan["files"]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(made)
for path, reference in plan["copies"].items():
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    content = Path(reference).read_text()
    if path.endswith(".json"):
        data = json.loads(content)
        content = json.dumps({k: round(v * nudge(k), 4) if isinstance(v, float) else v for k, v in data.items()})
    Path(path).write_text(content)
'''


def stage_plans(pipeline: dict) -> dict[str, dict]:
    """What each stage (foreach ones expanded) writes: folders, files other stages read in them,
    and metrics and plain outputs copied from the committed metrics/."""
    stages = {}
    for name, stage in pipeline["stages"].items():
        if "foreach" in stage:
            for key, item in stage["foreach"].items():
                text = json.dumps(stage["do"]).replace("${key}", key)
                for field, value in item.items():
                    text = text.replace("${item.%s}" % field, value)
                stages[f"{name}@{key}"] = json.loads(text)
        else:
            stages[name] = stage
    deps = {dep for stage in stages.values() for dep in stage.get("deps", [])}
    plans = {}
    for name, stage in stages.items():
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", [])]
        folders = [o for o in outs if not Path(o).suffix]
        plans[name] = {
            "params": [key for entry in stage.get("params", []) for key in
                       (entry if isinstance(entry, dict) else {entry: None})],
            "deps": [dep for dep in stage.get("deps", []) if not dep.startswith(("src/", "stages/"))],
            "folders": folders,
            "files": sorted(d for d in deps for f in folders if Path(f) in Path(d).parents),
            "copies": {o: str(ROOT / o) for o in outs if o.startswith("metrics/")},
        }
    return plans


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("exp_show") / "repo"
    repo.mkdir()
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    (repo / "fake_stages.json").write_text(json.dumps(stage_plans(pipeline)))
    (repo / "fake_stage.py").write_text(FAKE_STAGE)
    for name, stage in pipeline["stages"].items():
        body = stage.get("do", stage)
        body["cmd"] = f"python fake_stage.py {name}" + ("@${key}" if "do" in stage else "")
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    for name in ("params.yaml", ".gitignore", ".dvcignore"):
        (repo / name).write_bytes((ROOT / name).read_bytes())
    for script in (ROOT / "stages").glob("*.py"):  # code dependencies, as they are
        (repo / "stages" / script.name).parent.mkdir(exist_ok=True)
        (repo / "stages" / script.name).write_bytes(script.read_bytes())
    for room in (ROOT / "src" / "sqlora").iterdir():
        if room.is_dir() and room.name != "__pycache__":
            for module in room.glob("*.py"):
                (repo / "src" / "sqlora" / room.name).mkdir(parents=True, exist_ok=True)
                (repo / "src" / "sqlora" / room.name / module.name).write_bytes(module.read_bytes())
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")
    for setting in EXPERIMENTS:
        dvc(repo, "exp", "run", "-S", setting)
    git(repo, "checkout", "--", ".")  # the workspace back at the baseline
    dvc(repo, "checkout", "-f")
    return repo


def columns(project: Path, *options: str) -> list[str]:
    shown = dvc(project, "exp", "show", "--csv", *options).stdout
    return next(csv.reader(io.StringIO(shown)))


def table(project: Path, *options: str, width: int) -> list[str]:
    """The table as `dvc exp show` prints it in a terminal `width` columns wide: whole, as wide as
    it is, whatever the terminal (DVC sizes the page it hands its pager to the table)."""
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", *options], cwd=project,
                           env=dict(dvc_env(project), COLUMNS=str(width)), capture_output=True, text=True,
                           check=True, timeout=300).stdout
    return [line.rstrip() for line in shown.splitlines() if line.strip()]


def test_only_what_runs_are_compared_by_is_a_metric(project):
    baseline = json.loads(dvc(project, "exp", "show", "--json").stdout)[0]
    metrics = {key for file in baseline["data"]["metrics"].values() for key in file["data"]}
    assert metrics == METRICS


def test_what_dvc_exp_show_shows(project):
    """Five columns of its own, every metric (named after its file where two files share a name:
    none here), every key of params.yaml, used by a stage or not, and the hash of every file or
    folder a stage depends on. The last two are what reruns go by, so the plain table stays wide."""
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    keys = [f"{section}.{key}" for section, values in params.items() for key in values]
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    deps = {dep.replace("${item.model}", model) for stage in pipeline["stages"].values()
            for dep in stage.get("do", stage)["deps"]
            for model in ((item["model"] for item in stage["foreach"].values()) if "foreach" in stage else [""])}
    names = columns(project)
    assert names[:5] == ["Experiment", "rev", "typ", "Created", "parent"]
    assert names[5:9] == ACCURACY  # dvc.yaml's top-level metrics list the evaluate stage's first
    assert set(names[5:5 + len(METRICS)]) == METRICS
    assert names[5 + len(METRICS):5 + len(METRICS) + len(keys)] == keys
    assert set(names[5 + len(METRICS) + len(keys):]) == deps
    assert len(names) == 5 + len(METRICS) + len(keys) + len(deps)


def test_what_changed_fits_a_terminal(project):
    names = columns(project, *FITTING)
    assert len(names) <= 40 and {"lora.r", "finetuned_exec_all", "final_loss"} <= set(names)
    assert not {"base_exec_all", "train.seed"} & set(names)  # the same in every run: left out
    lines = table(project, *NARROW, width=TERMINAL)
    assert max(len(line) for line in lines) <= TERMINAL and not any("…" in line for line in lines), "\n".join(lines)
    header = lines[1].split()
    assert {"Experiment", "finetuned_exec_all", "finetuned_plug_all", "final_loss", "tokens_per_s", "lora.r"} <= set(header)
    assert len(lines) == 3 + 2 + len(EXPERIMENTS) + 1  # rules, header, workspace, baseline, each experiment


def test_the_first_screen_of_the_plain_table_holds_the_accuracy(project):
    """Plain `dvc exp show` is far wider than a terminal; its pager shows the left edge first.
    That edge holds the experiments' names and each model's accuracy."""
    lines = table(project, width=TERMINAL)
    header = lines[1][:TERMINAL].split()
    assert header[:2] == ["Experiment", "Created"] and set(ACCURACY) <= set(header), lines[1][:TERMINAL]
    assert max(len(line) for line in lines) > TERMINAL  # the rest is to the right, one scroll away
