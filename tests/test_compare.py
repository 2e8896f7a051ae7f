"""sqlora compare: two runs question by question, from folders, git revisions and experiments
(read through DVC), as text, JSON and a page; a run whose results cannot be found is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_project import dvc, git
from report_fixtures import QUESTIONS, build_run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)  # the fixtures run dvc repro
# B's fine-tuned answers: question 0 broken (a table that does not exist), question 1 fixed
B_FINETUNED = [f for _, _, f in QUESTIONS]
B_FINETUNED[0], B_FINETUNED[1] = "SELECT count(*) FROM singers", "SELECT name, age FROM singer"
# a one-stage pipeline that publishes a folder of results where the real pipeline writes them
PUBLISH = """
import shutil, sys, yaml
from pathlib import Path
source = Path(yaml.safe_load(open("params.yaml"))["run"]["source"])
for target in ("outputs/eval", "outputs/predictions", "data/prepared"):
    shutil.rmtree(target, ignore_errors=True)
shutil.copytree(source / "outputs" / "eval", "outputs/eval")
shutil.copytree(source / "predictions", "outputs/predictions")
Path("data/prepared").mkdir(parents=True)
shutil.copy(source / "dev_gold.sql", "data/prepared/dev_gold.sql")
"""


def sqlora_compare(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SQLORA_PROGRESS="0", DVC_NO_ANALYTICS="1", PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "sqlora.cli", "compare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, run_script) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("compare")
    a = build_run(work / "a", run_script)
    b = build_run(work / "b", run_script, {"base": [b for _, b, _ in QUESTIONS], "finetuned": B_FINETUNED})
    return {"a": a["folder"], "b": b["folder"], "work": work}


def test_two_folders_as_text_and_page(runs):
    done = sqlora_compare("a", "b", "--db", "a/db", cwd=runs["work"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("A: a ") and "fine-tuned, strict: 0.571 (4 of 7)" in lines[0]
    table = {line[:32].strip(): line[32:].split() for line in lines if line.startswith(("broken", "fixed", "both"))}
    assert table["broken (A right, B wrong)"] == ["1", "0", "0", "0", "1"]  # easy medium hard extra all
    assert table["fixed (A wrong, B right)"] == ["0", "1", "0", "0", "1"]
    assert table["both right"] == ["1", "1", "0", "1", "3"] and table["both wrong"] == ["1", "0", "1", "0", "2"]
    broken = lines.index("broken (1):")
    assert lines.index("fixed (1):") > broken  # the broken questions come first
    assert lines[broken + 1].split()[:3] == ["#0", "easy", "concert:"]
    assert lines[broken + 3].strip() == "B: SELECT count(*) FROM singers   [execution error: no such table: singers]"
    page = (runs["work"] / "outputs" / "compare" / "index.html").read_text(encoding="utf-8")
    assert page.index('data-question="0"') < page.index('data-question="1"') < page.index('data-question="2"')
    assert '"0":{"gold":{"rows":[["6"]]' in page  # the first rows of the changed questions' results
    assert "https://" not in page and "http://" not in page.replace("http://www.w3.org", "")


def test_json_and_the_plug_value_mode(runs, tmp_path):
    done = sqlora_compare(str(runs["a"]), str(runs["b"]), "--json", "--mode", "plug",
                          "--html", str(tmp_path / "page.html"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mode"] == "plug-value" and result["questions"] == 7 and result["not_shared"] == 0
    assert result["by_hardness"]["all"] == {"broken": 1, "fixed": 1, "both_wrong": 1, "both_right": 4}
    assert [q["index"] for q in result["broken"]] == [0] and [q["index"] for q in result["fixed"]] == [1]
    assert result["broken"][0]["question"] == "How many singers are there?"
    assert result["a"]["accuracy"]["all"] == {"right": 5, "questions": 7}
    assert (tmp_path / "page.html").is_file()


@pytest.fixture(scope="module")
def project(runs) -> Path:
    """A git + DVC project whose HEAD published run A (its outputs in the DVC cache), with run B
    in the workspace."""
    repo = runs["work"] / "project"
    repo.mkdir()
    (repo / "publish.py").write_text(PUBLISH)
    (repo / "params.yaml").write_text(yaml.safe_dump({"run": {"source": str(runs["a"])}}))
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"publish": {
        "cmd": "python publish.py", "deps": ["publish.py"], "params": ["run.source"],
        "outs": ["outputs/eval", "outputs/predictions", "data/prepared"]}}}))
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "run A")
    (repo / "params.yaml").write_text(yaml.safe_dump({"run": {"source": str(runs["b"])}}))
    dvc(repo, "repro")
    return repo


def test_head_against_the_workspace_by_default(project):
    done = sqlora_compare(cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("A: HEAD (") and "\nB: workspace " in done.stdout
    assert "run.source:" in done.stdout  # the parameters that differ
    assert "broken (1):" in done.stdout and "fixed (1):" in done.stdout


def test_an_experiment_by_its_name(project, runs):
    dvc(project, "exp", "run", "--temp", "-n", "a-again", "-S", f"run.source={runs['a']}")
    done = sqlora_compare("workspace", "a-again", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["b"]["run"].startswith("a-again (")
    # the workspace holds B, the experiment A's answers: what B broke, the experiment fixes
    assert [q["index"] for q in result["fixed"]] == [0] and [q["index"] for q in result["broken"]] == [1]


def test_a_run_without_cached_results_is_one_line(project):
    cache = project / ".dvc" / "cache"
    shutil.move(cache, project / "cache-aside")
    try:
        done = sqlora_compare(cwd=project)
    finally:
        shutil.move(project / "cache-aside", cache)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("error: HEAD (") and "no per-question results" in done.stderr
    assert "dvc pull" in done.stderr


def test_an_unknown_run_is_one_line(project):
    done = sqlora_compare("no-such-run", cwd=project)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "no-such-run" in done.stderr


def test_previews_drop_distinct_only_where_the_evaluation_did(runs, tmp_path):
    """Spider's metric drops DISTINCT unless eval.keep_distinct: B's params.yaml decides."""
    from sqlora.compare import compare, folder_run

    kept = tmp_path / "b_kept"
    shutil.copytree(runs["b"], kept)
    params = yaml.safe_load((kept / "params.yaml").read_text(encoding="utf-8"))
    params["eval"]["keep_distinct"] = True
    (kept / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    a = folder_run("a", runs["a"])
    assert compare(a, folder_run("b", runs["b"]), "finetuned")[2] is True
    assert compare(a, folder_run("b_kept", kept), "finetuned")[2] is False
