"""The predict stage: execution-guided choice among candidates (sqlexec.choose_candidates, as the
stage calls it), and what the stage writes."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SQLORA_PROGRESS", "0")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402
from eval_fixtures import concert_database, folder_digest, make_database  # noqa: E402
from script_modules import load_script  # noqa: E402

from sqlora.data.prompts import build_prompt, extract_sql  # noqa: E402
from sqlora.predict.choose import choose_candidates  # noqa: E402
from sqlora.predict.fanout import Prediction  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUANT16 = {"bits": 16, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
           "bnb_4bit_compute_dtype": "auto"}  # as params.yaml holds it
SCHEMA = "singer(id number, name text, country text, age number, note text)"


@pytest.fixture(scope="module")
def stage():
    return load_script("stages/predict.py")


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    concert_database(tmp_path / "db")
    make_database(tmp_path / "db" / "pets" / "pets.sqlite", "CREATE TABLE pet (id INTEGER, kind TEXT);")
    return tmp_path / "db"


def question(index: int, db_id: str = "concert", text: str = "How many singers?") -> dict:
    return {"index": index, "db_id": db_id, "question": text, "prompt": build_prompt(SCHEMA, text)}


# ---------------------------------------------------------------- choose

def choose(questions, candidates, db_dir, **options):
    """The choice as the stage makes it: candidates are raw generations."""
    return choose_candidates(questions, candidates, db_dir, extract=extract_sql, **options)


def test_the_stage_chooses_with_the_sandbox_and_does_not_import_the_evaluator():
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('stage', {str(ROOT / 'stages' / 'predict.py')!r}); "
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
            "print(sorted(name for name in sys.modules if name.startswith('sqlora.'))); "
            "print(hasattr(module, 'choose'), module.choose_sql.__module__)")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    modules, facts = done.stdout.strip().splitlines()[-2:]
    assert "sqlora.eval" not in modules
    assert facts == "False sqlora.predict.choose"


def test_choose_keeps_the_first_candidate_that_runs_with_rows_on_its_database(db_dir):
    questions = [question(0), question(1), question(2, "pets"), question(3, "pets")]
    candidates = [
        ["SELECT nope FROM singer", "SELECT name FROM singer", "SELECT 1"],
        ["SELECT count(*) FROM singer", "SELECT nope FROM singer", "SELECT 2"],
        ["SELECT name FROM singer", "SELECT count(*) FROM pet", "SELECT 3"],  # singer is another db's table
        ["SELECT nope", "SELEC kind FROM pet", "SELECT kind FROM nowhere"],  # none runs: the best
    ]
    before = folder_digest(db_dir)
    assert choose(questions, candidates, db_dir) == [1, 0, 1, 0]
    assert folder_digest(db_dir) == before


def test_choose_reads_the_sql_out_of_each_generation(db_dir):
    """Candidates are raw generations: their SQL is what runs (end tokens and prose cut off)."""
    candidates = [["SELECT nope FROM singer;<|im_end|>",
                   "SELECT name FROM singer WHERE age > 50;\nThis query lists the old singers.<|im_end|>"],
                  ["Sorry, I cannot answer that.", "SELECT count(*) FROM singer"]]
    assert choose([question(0), question(1)], candidates, db_dir) == [1, 1]


def test_choose_with_single_candidates_is_all_zeros_without_any_database(tmp_path):
    questions = [question(0), question(1, "pets")]
    missing = tmp_path / "no_such_dir"
    assert choose(questions, [["SELECT nope"], ["SELECT 1"]], missing) == [0, 0]
    assert choose([], [], missing) == []
    assert not missing.exists()


def test_choose_gives_zero_where_the_database_is_missing(db_dir):
    questions = [question(0, "no_such_db"), question(1)]
    candidates = [["SELECT nope", "SELECT 1"], ["SELECT nope", "SELECT 1"]]
    assert choose(questions, candidates, db_dir) == [0, 1]
    assert choose(questions, candidates, db_dir / "missing") == [0, 0]


def test_choose_with_mixed_candidate_counts(db_dir):
    assert choose([question(0), question(1)], [["SELECT nope"], ["SELECT nope", "SELECT 1"]],
                        db_dir) == [0, 1]


def rescore_module():
    return load_script("benchmarks/rescore_candidates.py")


def test_rescore_vote_keeps_the_largest_group_of_equal_results_preferring_rows(db_dir):
    rescore = rescore_module()
    records = [{"db_id": "concert"}] * 3 + [{"db_id": "missing"}]
    candidates = [
        ["SELECT 1", "SELECT count(*) FROM singer", "SELECT count(id) FROM singer"],  # 2 agree
        ["SELECT name FROM singer WHERE 0", "SELECT nope", "SELECT 7"],  # rows beat no rows
        ["SELECT nope", "SELECT name FROM singer WHERE 0"],  # runs, even without rows
        ["SELECT 1", "SELECT 2"],
    ]
    assert choose(records, candidates, db_dir, rule=rescore.vote) == [1, 2, 1, 0]
    assert rescore.choose(records, candidates, db_dir, rule=rescore.vote) == [1, 2, 1, 0]
    assert rescore.choose(records, candidates, db_dir) == choose(records, candidates, db_dir) == [0, 2, 1, 0]


def test_rescore_first_k_chooses_among_each_question_s_first_k_candidates(db_dir):
    records = [{"db_id": "concert"}] * 2
    candidates = [["SELECT nope", "SELECT nope2", "SELECT 1"], ["SELECT nope", "SELECT 2", "SELECT 3"]]
    first_k = rescore_module().first_k
    assert first_k(records, candidates, 2, db_dir) == ["SELECT nope", "SELECT 2"]
    assert first_k(records, candidates, 3, db_dir) == ["SELECT 1", "SELECT 2"]


# ---------------------------------------------------------------- the stage

def write_inputs(tmp_path: Path, questions: list[dict], quant=QUANT16, **predict) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["quant"] = quant
    params["predict"].update(predict)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    with (tmp_path / "dev.jsonl").open("w", encoding="utf-8") as f:
        for q in questions:
            f.write(json.dumps(q) + "\n")
    (tmp_path / "model").mkdir(exist_ok=True)
    return tmp_path


def run_main(stage, monkeypatch, work: Path, db_dir: Path) -> tuple[list[str], list[dict], dict]:
    monkeypatch.setattr(sys, "argv", [
        "predict.py", "--model", str(work / "model"), "--base", str(work / "model"),
        "--dev", str(work / "dev.jsonl"), "--db", str(db_dir), "--out", str(work / "finetuned"),
        "--metrics", str(work / "metrics.json"), "--details", str(work / "details.json"),
        "--params", str(work / "params.yaml")])
    stage.main()
    pred = (work / "finetuned" / "pred.sql").read_text(encoding="utf-8").splitlines()
    generations = [json.loads(line) for line in
                   (work / "finetuned" / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    metrics = json.loads((work / "metrics.json").read_text())
    assert list(metrics) == ["finetuned_predict_s", "finetuned_predict_peak_mb"]  # named after --out's folder
    return pred, generations, {**metrics, **json.loads((work / "details.json").read_text())}


def test_stage_writes_the_chosen_candidates(stage, db_dir, tmp_path, monkeypatch):
    questions = [question(7), question(3, "pets"), question(5)]
    candidates = [["SELECT nope FROM singer;", "SELECT name FROM singer;<|im_end|>"],
                  ["SELECT count(*) FROM pet", "SELECT 1"],
                  ["SELECT x FROM nowhere", "SELECT nope"]]
    seen = {}

    def fake_predict(model_dir, base_dir, quant, prompts, devices, **options):
        seen.update(options, prompts=prompts)
        return Prediction(candidates, 0.5, 2.0, 1234.5, 0.75)

    monkeypatch.setattr(stage, "predict_on_devices", fake_predict)
    work = write_inputs(tmp_path, questions, num_candidates=2, dequantize=False)
    pred, generations, metrics = run_main(stage, monkeypatch, work, db_dir)

    assert seen["num_candidates"] == 2 and seen["dequantize"] is False
    assert seen["prompts"] == [q["prompt"] for q in questions]
    assert pred == ["SELECT name FROM singer", "SELECT count(*) FROM pet", "SELECT x FROM nowhere"]
    assert [g["index"] for g in generations] == [7, 3, 5]
    assert [g["candidate"] for g in generations] == [1, 0, 0]
    assert [g["candidates"] for g in generations] == candidates
    assert [g["generation"] for g in generations] == [c[g["candidate"]] for c, g in zip(candidates, generations)]
    assert [g["sql"] for g in generations] == pred
    assert metrics["not_first_candidate"] == 1 and metrics["questions"] == 3
    assert metrics["load_s"] == 0.5 and metrics["generate_s"] == 2.0 and metrics["finetuned_predict_peak_mb"] == 1234.5
    # the shards' 0.75 s, after the stage's own start
    assert 0.75 <= metrics["ready_s"] <= 0.75 + metrics["finetuned_predict_s"]
    assert metrics["finetuned_predict_s"] >= 0 and metrics["empty_predictions"] == 0


def test_stage_with_one_candidate_writes_no_candidate_fields(stage, tmp_path, monkeypatch):
    questions = [question(0), question(1)]
    monkeypatch.setattr(stage, "predict_on_devices",
                        lambda *args, **options: Prediction([["SELECT 1"], ["no sql here"]], 0.1, 0.2, None, 0.1))
    work = write_inputs(tmp_path, questions, num_candidates=1)
    pred, generations, metrics = run_main(stage, monkeypatch, work, tmp_path / "no_db")  # never opened
    assert pred == ["SELECT 1", ""]
    assert all("candidate" not in g and "candidates" not in g for g in generations)
    assert metrics["not_first_candidate"] == 0 and metrics["empty_predictions"] == 1


@pytest.mark.parametrize("repair", [True, False])
def test_stage_repairs_a_column_taken_from_the_wrong_table(stage, db_dir, tmp_path, monkeypatch, repair):
    make_database(db_dir / "shows" / "shows.sqlite",
                  "CREATE TABLE stadium (stadium_id INTEGER, name TEXT); CREATE TABLE concert (stadium_id INTEGER);"
                  "INSERT INTO stadium VALUES (1, 'Hampden'); INSERT INTO concert VALUES (1);")
    wrong = "SELECT T1.name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id"
    monkeypatch.setattr(stage, "predict_on_devices",
                        lambda *args, **options: Prediction([[wrong], ["SELECT 1"]], 0.1, 0.2, None, 0.1))
    work = write_inputs(tmp_path, [question(0, "shows"), question(1)], num_candidates=1, repair_columns=repair)
    pred, generations, metrics = run_main(stage, monkeypatch, work, db_dir)
    expected = wrong.replace("T1.name", "T2.name") if repair else wrong
    assert pred == [expected, "SELECT 1"]
    assert generations[0]["generation"] == wrong and generations[0]["sql"] == expected
    assert generations[0].get("repaired", False) is repair and "repaired" not in generations[1]
    assert metrics["repaired"] == int(repair)


def test_stage_with_beam_search_on_a_tiny_model(stage, db_dir, tmp_path, monkeypatch):
    from tiny_model import build_tiny_model

    from sqlora.predict.choose import Choice

    questions = [question(0), question(1, "pets", "Which kinds of pets?"), question(2, text="Names?")]
    work = write_inputs(tmp_path, questions, quant={**QUANT16, "bits": 4}, num_candidates=3, dequantize=True,
                        max_new_tokens=4, batch_size=2, answer_prefix="SELECT")
    build_tiny_model(work / "model")
    # the choice among candidates is tested above; a fixed one here shows what the stage keeps of it
    seen = {}

    def fixed_choice(questions, candidates, db_dir, *, extract, repair):
        seen.update(candidates=candidates, extract=extract, repair=repair)
        return [Choice(0, "SELECT 10", False), Choice(2, "SELECT 12", False), Choice(1, "SELECT 11", True)]

    monkeypatch.setattr(stage, "choose_sql", fixed_choice)
    pred, generations, metrics = run_main(stage, monkeypatch, work, db_dir)
    candidates = seen["candidates"]
    assert seen["extract"] is extract_sql and seen["repair"] is True
    assert len(candidates) == 3
    for texts in candidates:  # three different beams, each after the answer prefix
        assert len(texts) == 3 and len(set(texts)) == 3 and all(text.startswith("SELECT") for text in texts)
    assert pred == ["SELECT 10", "SELECT 12", "SELECT 11"]
    assert [g["sql"] for g in generations] == pred
    assert [g["candidate"] for g in generations] == [0, 2, 1]
    assert [g["candidates"] for g in generations] == candidates
    assert [g["generation"] for g in generations] == [candidates[0][0], candidates[1][2], candidates[2][1]]
    assert [g.get("repaired") for g in generations] == [None, None, True]
    assert (metrics["questions"], metrics["not_first_candidate"], metrics["repaired"]) == (3, 2, 1)
    assert metrics["empty_predictions"] == 0 and metrics["devices"] >= 1


def test_stage_asks_for_growable_gpu_memory_segments_on_linux(stage):
    if sys.platform == "linux":
        assert "expandable_segments" in os.environ["PYTORCH_CUDA_ALLOC_CONF"]
