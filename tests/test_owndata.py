"""Your own data and BIRD's layout: the question files, the layout written in Spider's form, the
tables.json read off the SQLite files, the dev split by database, malformed rows, gold queries
that fail, evidence in the prompt, and BIRD's metric."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import pytest
import yaml
from script_modules import one_error_line, read_jsonl
from tiny_owndata import (
    BIRD_DEV,
    BIRD_TRAIN,
    FAILING_GOLD,
    OWN_QUESTIONS,
    build_own_data,
    build_tiny_bird,
    snapshot,
    write_questions,
)
from tiny_spider import DATABASES

from sqlora.core.errors import SqloraError
from sqlora.data.layouts import BIRD, OWN, SPIDER, find_source, read_layout, train_file
from sqlora.data.questions import read_questions
from sqlora.data.split import split_by_database
from sqlora.eval.accuracy import evaluate, rows_match_as_sets
from sqlora.eval.hardness import NOT_RATED, gold_hardness, outside_spider_grammar

ROOT = Path(__file__).resolve().parents[1]
DATA = {"source": "", "sha256": "", "schema_format": "compact", "value_hints": False, "evidence": True,
        "train_limit": 0, "dev_limit": 0, "dev_fraction": 0.2, "split_seed": 42}


@pytest.fixture
def stages(tmp_path, run_script):
    """stages(source, **data) runs fetch-db then preprocess on source in a fresh project; returns
    (fetch result, preprocess result or None, project folder)."""
    project = tmp_path / "project"
    project.mkdir()

    def run(source, **overrides):
        params = {"data": {**DATA, "source": str(source), **overrides}}
        (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
        fetched = run_script("stages/fetch_db.py", "--out", "data/spider", cwd=project)
        if fetched.returncode != 0:
            return fetched, None, project
        prepared = run_script("stages/preprocess.py", "--spider", "data/spider", "--model-facts", "none.json",
                              "--out", "data/prepared", "--metrics", "metrics/data.json", cwd=project)
        return fetched, prepared, project
    return run


# --- reading question files ----------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
def test_question_files_in_each_format(tmp_path, fmt):
    rows = [("shop", "How many products, in total?", "SELECT count(*)\nFROM product"),
            ("school", 'Students called "Bob"?', "SELECT name FROM student WHERE name LIKE 'Bob%'")]
    questions = read_questions(write_questions(tmp_path / f"train.{fmt}", rows))
    assert [(q["db_id"], q["question"], q["query"]) for q in questions] == rows
    lines = [2, 4] if fmt == "csv" else [1, 2] if fmt == "jsonl" else [2, 7]  # the CSV's first value spans 2 lines
    assert [q["origin"] for q in questions] == [f"train.{fmt}:{line}" for line in lines]


def test_bird_rows_keep_evidence_difficulty_and_id(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps([{"question_id": 7, "db_id": "x", "question": "q?", "evidence": " a = b ",
                                 "SQL": "SELECT 1", "difficulty": "simple"}]), encoding="utf-8")
    assert read_questions(path) == [{"db_id": "x", "question": "q?", "query": "SELECT 1", "evidence": "a = b",
                                     "difficulty": "simple", "question_id": 7, "origin": "dev.json:1"}]


def test_a_spreadsheets_byte_order_mark_is_no_part_of_the_header(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("\ufeffquestion,query,db_id\nHow many?,SELECT 1,shop\n".encode())
    assert read_questions(path)[0]["question"] == "How many?"


@pytest.mark.parametrize("name, text, expected", [
    ("train.jsonl", '{"db_id": "shop", "question": "a", "query": "SELECT 1"}\n\n{"db_id": "shop", "question": "b"\n',
     "train.jsonl line 3: not valid JSON"),
    ("train.jsonl", '{"db_id": "shop", "question": "a", "query": "SELECT 1"}\n{"db_id": "shop", "question": "b"}\n',
     "train.jsonl line 2: no query (each row needs question, query, db_id)"),
    ("train.jsonl", '["shop", "a", "SELECT 1"]\n', "train.jsonl line 1: expected an object"),
    ("train.jsonl", '{"db_id": 3, "question": "a", "query": "SELECT 1"}\n', "train.jsonl line 1: db_id must be text"),
    ("train.jsonl", '{"db_id": "../up", "question": "a", "query": "SELECT 1"}\n',
     "train.jsonl line 1: db_id '../up' cannot name a database file"),
    ("train.jsonl", '{"db_id": "shop", "question": "  ", "query": "SELECT 1"}\n', "train.jsonl line 1: question is blank"),
    ("train.csv", "question,query,db_id\na,SELECT 1,shop\nb,SELECT 2\n",
     "train.csv line 3: 2 fields, the header has 3"),
    ("train.csv", "question,sql_text,db_id\na,SELECT 1,shop\n", "train.csv line 1: the header names no query column"),
    ("train.csv", "question,query,db_id\na,SELECT 1,shop\nb,,shop\n", "train.csv line 3: no query"),
    ("train.json", '[\n  {"db_id": "shop", "question": "a", "query": "SELECT 1"},\n  {"db_id": "shop",\n'
                   '   "question": "b"}\n]', "train.json line 3: no query"),
    ("train.json", '[\n  {"db_id": "shop", "question": "a", "query": "SELECT 1"},\n  {"db_id": }\n]',
     "train.json line 3: not valid JSON"),
    ("train.json", '{"db_id": "shop"}', "train.json: expected a list of questions"),
])
def test_a_malformed_row_is_named_by_file_and_line(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SqloraError) as caught:
        read_questions(path)
    assert str(caught.value).startswith(f"{path.parent}") and expected in str(caught.value), str(caught.value)


def test_text_that_is_not_utf8_is_named_by_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"question,query,db_id\nQu\xe9bec?,SELECT 1,shop\n")
    with pytest.raises(SqloraError, match=r"train.csv line 2: not UTF-8 text"):
        read_questions(path)


def test_a_malformed_row_ends_fetch_db_in_one_line(tmp_path, stages):
    source = build_own_data(tmp_path / "own")
    lines = (source / "train.jsonl").read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4].replace('"db_id"', '"database"')
    (source / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fetched, _, project = stages(source)
    line = one_error_line(fetched)
    assert line == f"error: {source / 'train.jsonl'} line 5: no db_id (each row needs question, query, db_id)"
    assert not (project / "data" / "spider").exists()


# --- layouts --------------------------------------------------------------------

def test_layouts_are_told_apart(tmp_path, tiny_spider):
    assert find_source(tiny_spider).layout == SPIDER
    own = find_source(build_own_data(tmp_path / "own"))
    assert (own.layout, own.train.name, own.dev) == (OWN, "train.jsonl", None)
    bird = find_source(build_tiny_bird(tmp_path / "bird"))
    assert (bird.layout, bird.train.name, bird.dev.name) == (BIRD, "train.json", "dev.json")
    assert [p.name for p in bird.tables_files] == ["train_tables.json"]
    wrapped = tmp_path / "unpacked"  # a zip's single top folder
    wrapped.mkdir()
    build_own_data(wrapped / "my_data")
    assert find_source(wrapped).root == wrapped / "my_data"


def test_own_folder_becomes_spiders_layout_with_tables_read_off_the_databases(tmp_path, stages, tiny_spider):
    source = build_own_data(tmp_path / "own", flat=True)
    before = snapshot(source)
    fetched, prepared, project = stages(source)
    assert fetched.returncode == 0, fetched.stderr
    assert "your own data ready in data/spider: 3 databases (tables.json read off 3 of them), no dev file" \
        in fetched.stdout
    out = project / "data" / "spider"
    assert sorted(p.name for p in out.iterdir()) == ["database", "layout.json", "tables.json", "train.json"]
    assert read_layout(out)["layout"] == OWN and train_file(out) == out / "train.json"
    for db_id in ("concert", "school", "shop"):
        assert (out / "database" / db_id / f"{db_id}.sqlite").read_bytes() == \
            (source / "database" / f"{db_id}.sqlite").read_bytes()
    assert snapshot(source) == before  # the source is only read

    derived = {entry["db_id"]: entry for entry in json.loads((out / "tables.json").read_text(encoding="utf-8"))}
    spider = {entry["db_id"]: entry for entry in json.loads((tiny_spider / "tables.json").read_text(encoding="utf-8"))}
    for db_id in ("concert", "school", "shop"):
        ours, theirs = derived[db_id], spider[db_id]
        for key in ("table_names_original", "table_names", "column_names_original", "column_names"):
            assert ours[key] == theirs[key], (db_id, key)
        assert sorted(map(str, ours["foreign_keys"])) == sorted(map(str, theirs["foreign_keys"]))
        flat = [k for key in ours["primary_keys"] for k in (key if isinstance(key, list) else [key])]
        assert flat == [k for key in theirs["primary_keys"] for k in (key if isinstance(key, list) else [key])]
        declared = [spider_type for _, columns, _, _ in DATABASES[db_id] for _, sql_type, spider_type in columns]
        assert ours["column_types"][1:] == [t if t != "time" else "text" for t in declared]  # dates are TEXT here
    # a composite primary key stays one key
    tables = derived["concert"]["table_names_original"]
    pair = [i for i, (t, _) in enumerate(derived["concert"]["column_names_original"])
            if t == tables.index("singer_in_concert")]
    assert pair in derived["concert"]["primary_keys"]


def test_tables_json_of_the_source_is_used_where_it_has_the_database(tmp_path, stages):
    source = build_own_data(tmp_path / "own")
    entry = {"db_id": "shop", "table_names_original": ["product"], "table_names": ["goods"],
             "column_names_original": [[-1, "*"], [0, "name"]], "column_names": [[-1, "*"], [0, "name"]],
             "column_types": ["text", "text"], "primary_keys": [], "foreign_keys": []}
    (source / "tables.json").write_text(json.dumps([entry]), encoding="utf-8")
    fetched, _, project = stages(source)
    assert "(tables.json read off 2 of them)" in fetched.stdout, fetched.stdout + fetched.stderr
    tables = json.loads((project / "data/spider/tables.json").read_text(encoding="utf-8"))
    assert [t for t in tables if t["db_id"] == "shop"] == [entry]


def test_bird_layout_with_zipped_dev_databases(tmp_path, stages):
    source = build_tiny_bird(tmp_path / "bird", databases_zipped=True)
    before = snapshot(source)
    fetched, prepared, project = stages(source)
    assert fetched.returncode == 0, fetched.stderr
    assert f"BIRD ready in data/spider: 3 databases (tables.json read off 1 of them), {len(BIRD_DEV)} dev " \
           f"questions, {len(BIRD_TRAIN)} train questions" in fetched.stdout
    out = project / "data" / "spider"
    assert sorted(p.name for p in (out / "database").iterdir()) == ["concert", "school", "school_meals"]
    assert sorted(p.name for p in (out / "database" / "school_meals").iterdir()) == ["school_meals.sqlite"]
    dev = json.loads((out / "dev.json").read_text(encoding="utf-8"))
    assert dev[2]["query"] == BIRD_DEV[2][2] and dev[2]["evidence"] == BIRD_DEV[2][3]
    assert snapshot(source) == before


def test_bird_without_its_databases_is_one_line(tmp_path, stages):
    source = build_tiny_bird(tmp_path / "bird")
    (source / "dev" / "dev_databases").rename(source / "dev" / "databases")
    assert "dev.json has no dev_databases/ beside it" in one_error_line(stages(source)[0])


def test_no_databases_is_one_line(tmp_path, stages):
    source = tmp_path / "own"
    source.mkdir()
    write_questions(source / "train.jsonl", OWN_QUESTIONS)
    assert "no SQLite databases in" in one_error_line(stages(source)[0])


def test_own_data_in_a_zip(tmp_path, stages):
    source = build_own_data(tmp_path / "own", fmt="csv")
    archive = tmp_path / "own.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, "my_data/" + path.relative_to(source).as_posix())
    fetched, prepared, project = stages(archive)
    assert fetched.returncode == 0, fetched.stderr
    assert prepared.returncode == 0, prepared.stderr
    assert read_layout(project / "data" / "spider")["train_file"] == "train.csv"


# --- the dev split ----------------------------------------------------------------

def test_the_split_is_by_database_and_seeded():
    examples = [{"db_id": f"db{i % 7}", "n": i} for i in range(70)]
    train, dev, databases = split_by_database(examples, 0.2, 42)
    assert {e["db_id"] for e in dev} == set(databases) and not {e["db_id"] for e in train} & set(databases)
    assert len(train) + len(dev) == 70 and len(dev) >= 14 and len(databases) == 2
    assert [e["n"] for e in dev] == sorted(e["n"] for e in dev)  # the file's order kept
    assert split_by_database(examples, 0.2, 42) == (train, dev, databases)  # the same seed, the same split
    others = {tuple(split_by_database(examples, 0.2, seed)[2]) for seed in range(10)}
    assert len(others) > 1
    # at least one database stays in train, whatever the fraction
    train, dev, databases = split_by_database(examples, 1.0, 0)
    assert len(databases) == 6 and {e["db_id"] for e in train} == {"db0", "db1", "db2", "db3", "db4", "db5",
                                                                    "db6"} - set(databases)


def test_one_database_cannot_be_split():
    with pytest.raises(SqloraError, match="needs two or more"):
        split_by_database([{"db_id": "shop"}] * 5, 0.2, 42)


def test_preprocess_splits_off_dev_and_skips_the_failing_gold(tmp_path, stages):
    fetched, prepared, project = stages(build_own_data(tmp_path / "own"))
    assert prepared.returncode == 0, prepared.stderr
    counts = json.loads((project / "metrics" / "data.json").read_text(encoding="utf-8"))
    split = counts["dev_split_databases"]
    assert len(split) == 1
    assert f"dev is split off by database (data.dev_fraction 0.2, data.split_seed 42): {split[0]}" in prepared.stdout
    train = read_jsonl(project / "data/prepared/train.jsonl")
    dev = read_jsonl(project / "data/prepared/dev.jsonl")
    assert {r["db_id"] for r in dev} == set(split) and not {r["db_id"] for r in train} & set(split)
    assert counts["train_examples"] + counts["dev_questions"] + counts["train_skipped_gold_error"] \
        + counts["dev_skipped_gold_error"] == len(OWN_QUESTIONS)
    assert counts["train_skipped_gold_error"] + counts["dev_skipped_gold_error"] == 1
    failing_line = len(OWN_QUESTIONS)  # the failing gold is the file's last row
    assert f"  train.jsonl:{failing_line} (shop): execution error: no such column: discount" in prepared.stdout
    assert FAILING_GOLD[1] not in [r["question"] for r in train + dev]


def test_a_dev_file_is_used_as_it_is(tmp_path, stages):
    source = build_own_data(tmp_path / "own", questions=[q for q in OWN_QUESTIONS if q[0] != "shop"])
    write_questions(source / "dev.csv", [q for q in OWN_QUESTIONS if q[0] == "shop"])
    fetched, prepared, project = stages(source)
    assert prepared.returncode == 0, prepared.stderr
    counts = json.loads((project / "metrics" / "data.json").read_text(encoding="utf-8"))
    assert "dev_split_databases" not in counts and counts["dev_skipped_gold_error"] == 1
    assert {r["db_id"] for r in read_jsonl(project / "data/prepared/dev.jsonl")} == {"shop"}
    assert "dev.csv:" in prepared.stdout  # the failing gold, named by its file and line


def test_evidence_goes_in_the_prompt_when_asked(tmp_path, stages):
    fetched, prepared, project = stages(build_tiny_bird(tmp_path / "bird"))
    assert prepared.returncode == 0, prepared.stderr
    dev = read_jsonl(project / "data/prepared/dev.jsonl")
    user = dev[2]["prompt"][-1]["content"]
    assert f"\n\nEvidence: {BIRD_DEV[2][3]}\nQuestion: {BIRD_DEV[2][1]}\nSQL:" in user
    assert "Evidence:" not in dev[7]["prompt"][-1]["content"]  # that question has none
    counts = json.loads((project / "metrics" / "data.json").read_text(encoding="utf-8"))
    assert counts["layout"] == "bird" and counts["dev_with_evidence"] == len(BIRD_DEV) - 1
    assert json.loads((project / "data/prepared/prompt_format.json").read_text())["evidence"] is True

    _, prepared, project = stages(build_tiny_bird(tmp_path / "bird2"), evidence=False)
    assert prepared.returncode == 0, prepared.stderr
    assert not any("Evidence:" in r["prompt"][-1]["content"] for r in read_jsonl(project / "data/prepared/dev.jsonl"))


# --- hardness and BIRD's metric ------------------------------------------------------

@pytest.mark.parametrize("sql, reason", [
    ("SELECT MAX(CAST(`Free Meal Count (K-12)` AS REAL)) FROM frpm", "function CAST"),
    ("SELECT `County Name` FROM frpm", "name `County Name`"),
    ("SELECT SUM(IIF(a = 1, 1, 0)) FROM t", "function IIF"),
    ("SELECT CASE WHEN a > 1 THEN 'x' END FROM t", "CASE"),
    ("WITH c AS (SELECT 1) SELECT * FROM c", "starts with WITH, not SELECT"),
    ("SELECT a FROM t LEFT JOIN u ON t.id = u.id", "LEFT JOIN"),
    ("SELECT a || b FROM t", "operator ||"),
    ("SELECT a FROM t LIMIT 1 OFFSET 2", "LIMIT other than a number"),
    ("SELECT a FROM t; DELETE FROM t", "more than one statement"),
])
def test_queries_outside_spiders_grammar_have_no_hardness(sql, reason):
    assert outside_spider_grammar(sql) == reason
    assert gold_hardness(sql) == NOT_RATED


def test_spiders_own_queries_are_rated():
    for sql in ("SELECT count(*) FROM singer", "SELECT T1.a FROM match AS T1 JOIN t AS T2 ON T1.x = T2.x",
                "SELECT name FROM t WHERE id NOT IN (SELECT id FROM u) ORDER BY age DESC LIMIT 3",
                "SELECT a FROM t INTERSECT SELECT a FROM u", "SELECT count(DISTINCT a) FROM t;"):
        assert gold_hardness(sql) in ("easy", "medium", "hard", "extra"), sql


def test_bird_compares_sets_of_rows():
    assert rows_match_as_sets([(1, "a"), (2, "b")], [(2, "b"), (1, "a"), (1, "a")])
    assert not rows_match_as_sets([(1, "a")], [("a", 1)])  # columns in their order
    assert not rows_match_as_sets([(1,), (2,)], [(1,)])
    assert rows_match_as_sets([], [])


def meals_files(tmp_path: Path, pairs: list[tuple[str, str]]) -> tuple[Path, Path, Path]:
    source = build_tiny_bird(tmp_path / "bird")
    db = source / "dev" / "dev_databases"
    gold = tmp_path / "gold.sql"
    gold.write_text("".join(f"{g}\tschool_meals\n" for g, _ in pairs), encoding="utf-8")
    pred = tmp_path / "pred.sql"
    pred.write_text("".join(f"{p}\n" for _, p in pairs), encoding="utf-8")
    return gold, pred, db


def test_bird_metric_against_spiders_on_the_same_predictions(tmp_path):
    pairs = [
        # duplicates and row order: right by both
        ("SELECT City FROM schools WHERE City = 'Oakland'", "SELECT City FROM schools WHERE City = 'Oakland' "
                                                             "ORDER BY School DESC"),
        # columns swapped: Spider's rules accept a reordering of columns, BIRD's do not
        ("SELECT School, City FROM schools", "SELECT City, School FROM schools"),
        # DISTINCT: Spider drops it from both queries; BIRD compares sets anyway
        ("SELECT DISTINCT City FROM schools", "SELECT City FROM schools"),
        # a wrong count: wrong by both
        ("SELECT COUNT(*) FROM schools", "SELECT COUNT(*) FROM frpm WHERE `County Name` = 'Alameda'"),
        # a column named value: Spider's placeholder rule mangles it, BIRD runs the query as written
        ("SELECT `County Name` FROM frpm WHERE CDSCode = '04'", "SELECT `County Name` AS value FROM frpm "
                                                                "WHERE CDSCode = '04'"),
    ]
    gold, pred, db = meals_files(tmp_path, pairs)
    bird = evaluate(gold, pred, db, metric="bird", workers=1)
    spider = evaluate(gold, pred, db, metric="spider", workers=1)
    assert [r["exec"] for r in bird.per_question] == [1, 0, 1, 0, 1]
    assert [r["exec"] for r in spider.per_question] == [1, 1, 1, 0, 0]
    assert bird.per_question[1]["error"] == "wrong result"
    assert [r["hardness"] for r in bird.per_question][-1] == NOT_RATED
    assert bird.scores[NOT_RATED]["count"] == 1 and bird.scores["all"]["count"] == 5
    with pytest.raises(SqloraError, match="BIRD's metric has none"):
        evaluate(gold, pred, db, metric="bird", plug_value=True, workers=1)


def test_the_evaluate_stage_chooses_bird_for_birds_layout(tmp_path, stages, run_script):
    fetched, prepared, project = stages(build_tiny_bird(tmp_path / "bird"))
    assert prepared.returncode == 0, prepared.stderr
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["eval"]["workers"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    golds = [line.split("\t")[0] for line in (project / "data/prepared/dev_gold.sql").read_text().splitlines()]
    (project / "pred.sql").write_text("".join(g + "\n" for g in golds[:-1]) + "SELECT School FROM schools\n")

    def evaluate_stage(*extra):
        return run_script("stages/evaluate.py", "--gold", "data/prepared/dev_gold.sql", "--db", "data/spider/database",
                          "--pred", "base=pred.sql", "--metrics", "metrics/eval.json", "--plot", "metrics/plot.csv",
                          "--out", "outputs/eval", "--details", "metrics/eval_details.json", *extra, cwd=project)
    done = evaluate_stage("--layout", "data/spider/layout.json")
    assert done.returncode == 0, done.stderr
    assert "metric: bird (auto: data from BIRD's layout)" in done.stdout
    details = json.loads((project / "metrics/eval_details.json").read_text())
    assert details["metric"] == "bird" and details["metric_chosen_by"] == "auto: data from BIRD's layout"
    assert details["hardness_not_rated"] == sum(gold_hardness(g) == NOT_RATED for g in golds) > 0
    scores = json.loads((project / "metrics/eval.json").read_text())
    assert "base_plug_all" not in scores  # BIRD has no plug-value
    assert details["count_na"] == details["hardness_not_rated"] and details["count_all"] == len(golds)
    assert scores["base_exec_all"] == round((len(golds) - 1) / len(golds), 4)
    rows = read_jsonl(project / "outputs/eval/per_question.jsonl")
    assert [r["hardness"] for r in rows].count(NOT_RATED) == details["count_na"]
    assert "n/a" in done.stdout.split("EXECUTION ACCURACY")[0]
    plot = (project / "metrics/plot.csv").read_text()
    assert "base n/a,base,n/a," in plot

    # eval.metric set by hand wins over auto
    params["eval"]["metric"] = "spider"
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    done = evaluate_stage("--layout", "data/spider/layout.json")
    assert done.returncode == 0, done.stderr
    assert "metric: spider (eval.metric)" in done.stdout
    assert "base_plug_all" in json.loads((project / "metrics/eval.json").read_text())


def test_gold_check_never_writes_the_database(tmp_path, stages):
    source = build_own_data(tmp_path / "own")
    evil = [("shop", "Drop it", "DROP TABLE orders"), ("shop", "Attach", "ATTACH 'x.db' AS x"),
            ("shop", "Vacuum", "VACUUM INTO 'copy.db'")]
    write_questions(source / "train.jsonl", OWN_QUESTIONS + evil)
    fetched, prepared, project = stages(source)
    assert prepared.returncode == 0, prepared.stderr
    counts = json.loads((project / "metrics" / "data.json").read_text(encoding="utf-8"))
    assert counts["train_skipped_gold_error"] + counts["dev_skipped_gold_error"] == 1 + len(evil)
    with sqlite3.connect(project / "data/spider/database/shop/shop.sqlite") as connection:
        assert connection.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
    connection.close()
    assert sorted(p.name for p in (project / "data/spider/database/shop").iterdir()) == ["shop.sqlite"]
    assert not list(project.rglob("copy.db")) and not list(project.rglob("x.db"))
