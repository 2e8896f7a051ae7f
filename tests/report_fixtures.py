"""A small run on the concert database, as the pipeline leaves it for the report stage: gold,
base and fine-tuned predictions with their generations.jsonl, judged by the evaluate stage."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from eval_fixtures import concert_database

ROOT = Path(__file__).resolve().parents[1]

# (gold, base's SQL, fine-tuned's SQL); strict verdicts in the comments
QUESTIONS = [
    ("SELECT count(*) FROM singer", "SELECT count(*) FROM singers", "SELECT count(*) FROM singer"),  # easy, fixed
    ("SELECT name, age FROM singer", "SELECT age, name FROM singer", "SELECT name FROM singer"),  # medium, broken
    ("SELECT name FROM singer WHERE age > 20 ORDER BY age LIMIT 3", "SELEC name FROM singer",
     "SELECT nme FROM singer"),  # hard, both wrong
    ("SELECT name, age FROM singer UNION SELECT name, age FROM singer", "",
     "SELECT name, age FROM singer UNION SELECT name, age FROM singer"),  # extra, fixed
    ("SELECT name FROM singer WHERE country = 'France'", "SELECT name FROM singer WHERE country = 'France'",
     "SELECT name FROM singer WHERE country = 'FRANCE'"),  # easy, broken (right with plug-value)
    ("SELECT count(*) FROM numbers", "SELECT count(*) FROM numbers AS a, numbers AS b, numbers AS c",
     "SELECT count(*) FROM numbers"),  # easy, fixed (base times out)
    ("SELECT country, count(*) FROM singer GROUP BY country", "SELECT country, count(*) FROM singer GROUP BY country",
     "SELECT country, count(*) FROM singer GROUP BY country"),  # medium, both right
]
TEXTS = ["How many singers are there?", "Name and age of every singer.", "The three youngest singers over 20.",
         "Every singer's name and age, once.", "Singers from France.", "How many numbers?",
         "How many singers per country?"]
# what the page must count (strict): by hardness, fine-tuned right/wrong, base -> fine-tuned
HARDNESS = {"easy": 3, "medium": 2, "hard": 1, "extra": 1}
FINETUNED_RIGHT = 4
OUTCOMES = {"fixed": 3, "broken": 2, "both-wrong": 1, "both-right": 1}


def generation(index: int, sql: str, **extra) -> str:
    record = {"index": index, "db_id": "concert", "question": TEXTS[index], "generation": sql, "sql": sql, **extra}
    return json.dumps(record) + "\n"


def build_run(folder: Path, run_script, model_sql: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """folder/{dev_gold.sql, db/, predictions/<name>/{pred.sql,generations.jsonl}, outputs/eval, params.yaml},
    judged by stages/evaluate.py (timeout 0.5 s); returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    concert_database(folder / "db")
    gold = folder / "dev_gold.sql"
    gold.write_text("".join(f"{g}\tconcert\n" for g, _, _ in QUESTIONS), encoding="utf-8")
    model_sql = model_sql or {"base": [b for _, b, _ in QUESTIONS], "finetuned": [f for _, _, f in QUESTIONS]}
    paths = {"gold": gold, "db": folder / "db", "folder": folder}
    for name, sqls in model_sql.items():
        out = folder / "predictions" / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "pred.sql").write_text("".join(sql + "\n" for sql in sqls), encoding="utf-8")
        extras = {0: {"candidate": 1, "candidates": ["SELECT", sqls[0]]}, 5: {"repaired": True}}
        (out / "generations.jsonl").write_text(
            "".join(generation(i, sql, **(extras.get(i, {}) if name == "finetuned" else {}))
                    for i, sql in enumerate(sqls)), encoding="utf-8")
        paths[name] = out
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["eval"].update(timeout=0.5, workers=1)
    paths["params"] = folder / "params.yaml"
    paths["params"].write_text(yaml.safe_dump(params), encoding="utf-8")
    done = run_script("stages/evaluate.py", "--gold", gold, "--db", paths["db"],
                      *[arg for name in model_sql for arg in ("--pred", f"{name}={paths[name] / 'pred.sql'}")],
                      "--metrics", folder / "metrics" / "eval.json", "--details", folder / "metrics" / "eval_details.json",
                      "--plot", folder / "metrics" / "accuracy_by_hardness.csv", "--out", folder / "outputs" / "eval",
                      "--params", paths["params"], cwd=folder)
    assert done.returncode == 0, done.stderr
    paths["per_question"] = folder / "outputs" / "eval" / "per_question.jsonl"
    return paths


def run_report(paths: dict[str, Path], run_script, *extra: str):
    return run_script("stages/report.py", "--per-question", paths["per_question"],
                      "--generations", f"base={paths['base'] / 'generations.jsonl'}",
                      "--generations", f"finetuned={paths['finetuned'] / 'generations.jsonl'}",
                      "--gold", paths["gold"], "--db", paths["db"], "--out", paths["folder"] / "outputs" / "report",
                      "--params", paths["params"], *extra, cwd=paths["folder"])
