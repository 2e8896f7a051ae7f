"""Tiny data sets in the layouts data.source takes besides Spider's: a folder of your own, and BIRD's.

build_own_data(root): train.jsonl (or .csv) with the questions of three databases of the tiny
Spider (concert, school, shop) as database/<db_id>/<db_id>.sqlite or database/<db_id>.sqlite, no
tables.json, no dev file, and one gold query that fails on its database (FAILING_GOLD).

build_tiny_bird(root): BIRD's layout, train/train.json + train/train_databases/ (concert, school,
with a train_tables.json) and dev/dev.json + dev/dev_databases/ (a school-meals database whose
names hold spaces and brackets, as BIRD's do), every question with its evidence, most dev gold
queries outside Spider's grammar (backquoted names, CAST, IIF).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

from tiny_spider import DATABASES, DEV, ROWS, TRAIN, _tables_json_entry, _write_database

OWN_DATABASES = ("concert", "school", "shop")
FAILING_GOLD = ("shop", "What is the total discount given?", "SELECT sum(discount) FROM orders")
OWN_QUESTIONS = [q for q in TRAIN + DEV if q[0] in OWN_DATABASES] + [FAILING_GOLD]


def build_own_data(root: Path, *, flat: bool = False, fmt: str = "jsonl", questions=None) -> Path:
    """A folder of your own: train.<fmt> and database/ (flat: database/<db_id>.sqlite)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for db_id in OWN_DATABASES:
        path = root / "database" / (f"{db_id}.sqlite" if flat else f"{db_id}/{db_id}.sqlite")
        _write_database(path, DATABASES[db_id], ROWS[db_id])
    write_questions(root / f"train.{fmt}", OWN_QUESTIONS if questions is None else questions)
    return root


def write_questions(path: Path, questions) -> Path:
    """(db_id, question, query[, evidence]) rows as .jsonl, .csv or .json."""
    rows = [dict(zip(("db_id", "question", "query", "evidence"), q)) for q in questions]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["question", "query", "db_id"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


# --- BIRD -------------------------------------------------------------------------

MEALS_SCHEMA = """
CREATE TABLE schools (CDSCode TEXT PRIMARY KEY, School TEXT, City TEXT, "Charter School" INTEGER);
CREATE TABLE frpm (CDSCode TEXT PRIMARY KEY, "County Name" TEXT, "Enrollment (K-12)" REAL,
                   "Free Meal Count (K-12)" REAL, FOREIGN KEY (CDSCode) REFERENCES schools(CDSCode));
"""
MEALS_ROWS = {
    "schools": [("01", "Lincoln High", "Oakland", 0), ("02", "Mission Prep", "Fremont", 1),
                ("03", "Bayview Elementary", "Oakland", 0), ("04", "Hilltop Academy", "Berkeley", 1),
                ("05", "Harbor Middle", "Alameda", 0)],
    "frpm": [("01", "Alameda", 1200, 600), ("02", "Alameda", 400, 80), ("03", "Alameda", 300, 240),
             ("04", "Contra Costa", 500, 100), ("05", "Alameda", 800, 200)],
}
BIRD_TRAIN = [(db_id, question, query, f"{db_id} data; tables as named") for db_id, question, query in TRAIN
              if db_id in ("concert", "school")]
BIRD_DEV = [
    ("school_meals", "How many schools are there?", "SELECT COUNT(*) FROM schools", "each row of schools is a school"),
    ("school_meals", "Which schools are in Oakland?", "SELECT School FROM schools WHERE City = 'Oakland'",
     "Oakland refers to City = 'Oakland'"),
    ("school_meals", "What is the highest eligible free rate for K-12 students in Alameda County?",
     "SELECT MAX(CAST(`Free Meal Count (K-12)` AS REAL) / `Enrollment (K-12)`) FROM frpm "
     "WHERE `County Name` = 'Alameda'",
     "Eligible free rate for K-12 = `Free Meal Count (K-12)` / `Enrollment (K-12)`"),
    ("school_meals", "List the charter schools and their cities.",
     "SELECT School, City FROM schools WHERE `Charter School` = 1", "Charter schools refers to `Charter School` = 1"),
    ("school_meals", "How many students are enrolled in Alameda County?",
     "SELECT SUM(`Enrollment (K-12)`) FROM frpm WHERE `County Name` = 'Alameda'",
     "students enrolled refers to `Enrollment (K-12)`"),
    ("school_meals", "Name the school with the most free meals.",
     "SELECT T1.School FROM schools AS T1 INNER JOIN frpm AS T2 ON T1.CDSCode = T2.CDSCode "
     "ORDER BY T2.`Free Meal Count (K-12)` DESC LIMIT 1", "most free meals refers to MAX(`Free Meal Count (K-12)`)"),
    ("school_meals", "How many charter and non-charter schools are there?",
     "SELECT SUM(IIF(`Charter School` = 1, 1, 0)), SUM(IIF(`Charter School` = 0, 1, 0)) FROM schools",
     "charter refers to `Charter School` = 1"),
    ("school_meals", "Which cities have schools?", "SELECT DISTINCT City FROM schools", ""),
]


def build_tiny_bird(root: Path, *, databases_zipped: bool = False) -> Path:
    """BIRD's layout (dev databases zipped as dev_databases.zip when databases_zipped)."""
    import zipfile

    root = Path(root)
    train, dev = root / "train", root / "dev"
    for db_id in ("concert", "school"):
        _write_database(train / "train_databases" / db_id / f"{db_id}.sqlite", DATABASES[db_id], ROWS[db_id])
    (train / "train_tables.json").write_text(json.dumps(
        [_tables_json_entry(db_id, DATABASES[db_id]) for db_id in ("concert", "school")], indent=2), encoding="utf-8")
    (train / "train.json").write_text(json.dumps(
        [{"db_id": d, "question": q, "evidence": e, "SQL": s} for d, q, s, e in BIRD_TRAIN], indent=4),
        encoding="utf-8")
    meals = dev / "dev_databases" / "school_meals" / "school_meals.sqlite"
    meals.parent.mkdir(parents=True)
    with sqlite3.connect(meals) as connection:
        connection.executescript(MEALS_SCHEMA)
        for table, rows in MEALS_ROWS.items():
            connection.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    connection.close()
    (meals.parent / "database_description").mkdir()
    (meals.parent / "database_description" / "frpm.csv").write_text("original_column_name,column_description\n")
    (dev / "dev.json").write_text(json.dumps(
        [{"question_id": i, "db_id": d, "question": q, "evidence": e, "SQL": s,
          "difficulty": "simple" if i < 4 else "moderate"} for i, (d, q, s, e) in enumerate(BIRD_DEV)], indent=4),
        encoding="utf-8")
    if databases_zipped:
        archive = dev / "dev_databases.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted((dev / "dev_databases").rglob("*")):
                zf.write(path, path.relative_to(dev).as_posix())
        _remove_tree(dev / "dev_databases")
    return root


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its bytes (to show a source was never written)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
