"""Judging rules of sqlora.evaluate (the reference's semantics) on tiny databases."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from eval_fixtures import concert_database, folder_digest, make_database, write_questions
from sqlora.errors import SqloraError
from sqlora.evaluate import EvalResult, evaluate, format_table, prepare_sql, results_match
from sqlora.plugvalue import PlugSearch


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    concert_database(tmp_path / "db")
    return tmp_path / "db"


def judge_pairs(tmp_path: Path, db_dir: Path, pairs, **options) -> list[dict]:
    gold, pred = write_questions(tmp_path, pairs)
    options.setdefault("workers", 1)
    return evaluate(gold, pred, db_dir, **options).per_question


def verdicts(tmp_path, db_dir, pairs, **options) -> list[int]:
    return [record["exec"] for record in judge_pairs(tmp_path, db_dir, pairs, **options)]


# --- result comparison, as a function -------------------------------------------------------


def test_rows_are_a_multiset_without_order_by():
    assert results_match([(1,), (2,), (2,)], [(2,), (1,), (2,)], order_matters=False)
    assert not results_match([(1,), (2,), (2,)], [(1,), (1,), (2,)], order_matters=False)
    assert not results_match([(1,), (2,)], [(1,), (2,), (2,)], order_matters=False)


def test_rows_are_a_list_with_order_by():
    assert results_match([(1,), (2,)], [(1,), (2,)], order_matters=True)
    assert not results_match([(1,), (2,)], [(2,), (1,)], order_matters=True)


def test_columns_may_come_in_another_order():
    gold = [("a", 1, 10.5), ("b", 2, 20.5)]
    pred = [(10.5, "a", 1), (20.5, "b", 2)]
    assert results_match(gold, pred, order_matters=False)
    assert results_match(gold, pred, order_matters=True)
    assert not results_match(gold, [(10.5, "a", 2), (20.5, "b", 1)], order_matters=False)
    assert not results_match(gold, [("a", 1), ("b", 2)], order_matters=False)


def test_both_empty_is_equal_whatever_the_columns():
    assert results_match([], [], order_matters=False)
    assert not results_match([], [(1,)], order_matters=False)
    assert not results_match([(1,)], [], order_matters=False)


def test_numbers_compare_by_value():
    assert results_match([(1,)], [(1.0,)], order_matters=False)


def test_wide_results_with_look_alike_columns_are_fast():
    # twelve columns with the same values in each: only one column order matches
    width, height = 12, 40
    gold = [tuple((row + shift) % height for shift in range(width)) for row in range(height)]
    order = [5, 0, 11, 3, 8, 1, 10, 6, 2, 9, 4, 7]
    pred = [tuple(row[k] for k in order) for row in gold]
    start = time.monotonic()
    assert results_match(gold, pred, order_matters=False)
    broken = [row[:-1] + (row[0],) for row in pred]
    assert not results_match(gold, broken, order_matters=False)
    assert time.monotonic() - start < 1.0


# --- judging whole questions ----------------------------------------------------------------


def test_order_by_in_the_gold_makes_row_order_count(tmp_path, db_dir):
    pairs = [
        ("SELECT name FROM singer ORDER BY age", "SELECT name FROM singer ORDER BY age DESC"),
        ("SELECT name FROM singer ORDER BY age", "SELECT name FROM singer ORDER BY age"),
        ("SELECT name FROM singer", "SELECT name FROM singer ORDER BY age DESC"),
    ]
    assert verdicts(tmp_path, db_dir, pairs) == [0, 1, 1]


def test_column_order_and_empty_results(tmp_path, db_dir):
    pairs = [
        ("SELECT name, age FROM singer", "SELECT age, name FROM singer"),
        ("SELECT name FROM singer WHERE age > 1000", "SELECT country, age FROM singer WHERE age < 0"),
        ("SELECT name FROM singer WHERE age > 1000", "SELECT name FROM singer"),
        ("SELECT name, age FROM singer", "SELECT name FROM singer"),
    ]
    records = judge_pairs(tmp_path, db_dir, pairs)
    assert [r["exec"] for r in records] == [1, 1, 0, 0]
    assert records[2]["error"] == "too many rows (gold has 0)"
    assert records[3]["error"] == "wrong result (1 column, gold has 2)"


def test_distinct_is_removed_unless_kept(tmp_path, db_dir):
    pairs = [
        ("SELECT country FROM singer", "SELECT DISTINCT country FROM singer"),
        ("SELECT count(DISTINCT country) FROM singer", "SELECT count(country) FROM singer"),
    ]
    assert verdicts(tmp_path, db_dir, pairs) == [1, 1]
    assert verdicts(tmp_path, db_dir, pairs, keep_distinct=True) == [0, 0]
    assert prepare_sql("SELECT DISTINCT a, COUNT(DISTINCT b) FROM t WHERE c = 'distinct'", False) == (
        "SELECT  a, COUNT( b) FROM t WHERE c = 'distinct'"
    )


def test_plug_value_right_and_wrong(tmp_path, db_dir):
    pairs = [
        # the value is wrong as written; with the gold's value it is right
        ("SELECT name FROM singer WHERE country = 'France'", "SELECT name FROM singer WHERE country = 'france'"),
        # two slots that the gold fills in the other order
        (
            "SELECT name FROM singer WHERE age > 30 AND country = 'France'",
            "SELECT name FROM singer WHERE country = 'Japan' AND age > 50",
        ),
        # wrong whatever the value
        ("SELECT name FROM singer WHERE country = 'France'", "SELECT name FROM singer WHERE country != 'Italy'"),
        # no value to plug: the result decides
        ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer WHERE age > 0"),
    ]
    assert verdicts(tmp_path, db_dir, pairs) == [0, 0, 0, 1]
    records = judge_pairs(tmp_path, db_dir, pairs, plug_value=True)
    assert [r["exec"] for r in records] == [1, 1, 0, 1]
    assert records[2]["error"] == "too many rows (gold has 3)"
    assert records[2]["plug_tried"] == 1 and records[2]["plug_capped"] is False


def test_plug_search_is_best_first_and_bounded():
    gold = "SELECT a FROM t WHERE b = 'x' AND c = 3 AND d = 'y'"
    pred = "SELECT a FROM t WHERE d = 'Y' AND c = 4 AND b = 'xx' LIMIT 7"
    search = PlugSearch(gold, pred, limit=5)
    candidates = list(search)
    assert candidates[0] == "SELECT a FROM t WHERE d = 'y' AND c = 3 AND b = 'x' LIMIT 3"
    assert len(candidates) == 5 and len(set(candidates)) == 5
    assert search.capped and search.space == 3**4
    exhaustive = PlugSearch(gold, pred, limit=1000)
    assert len(list(exhaustive)) == 3**4 and not exhaustive.capped
    assert list(PlugSearch("SELECT a FROM t", pred)) == []


def test_empty_prediction_keeps_lines_aligned(tmp_path, db_dir):
    pairs = [
        ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
        ("SELECT name FROM singer", ""),
        ("SELECT age FROM singer", "SELECT age FROM singer"),
    ]
    records = judge_pairs(tmp_path, db_dir, pairs)
    assert [(r["index"], r["exec"], r["error"]) for r in records] == [
        (0, 1, None),
        (1, 0, "empty prediction"),
        (2, 1, None),
    ]


def test_line_counts_must_agree(tmp_path, db_dir):
    gold, pred = write_questions(tmp_path, [("SELECT 1", "SELECT 1"), ("SELECT 2", "SELECT 2")])
    pred.write_text("SELECT 1\n", encoding="utf-8")
    with pytest.raises(SqloraError, match=r"2 gold lines .* 1 prediction lines"):
        evaluate(gold, pred, db_dir)


def test_missing_inputs_are_clear_errors(tmp_path, db_dir):
    gold, pred = write_questions(tmp_path, [("SELECT 1", "SELECT 1")])
    with pytest.raises(SqloraError, match="gold file not found"):
        evaluate(tmp_path / "nope.sql", pred, db_dir)
    with pytest.raises(SqloraError, match="database folder not found"):
        evaluate(gold, pred, tmp_path / "nowhere")


def test_gold_that_fails_is_reported_not_raised(tmp_path, db_dir):
    pairs = [("SELECT nope FROM singer", "SELECT name FROM singer"), ("SELECT 1", "SELECT 1")]
    records = judge_pairs(tmp_path, db_dir, pairs)
    assert records[0]["exec"] == 0 and records[0]["error"].startswith("gold failed: execution error: no such column")
    assert records[1]["exec"] == 1


def test_missing_database_is_not_scored(tmp_path, db_dir):
    gold = tmp_path / "gold.sql"
    gold.write_text("SELECT 1\tconcert\nSELECT 1\tghost\n", encoding="utf-8")
    pred = tmp_path / "pred.sql"
    pred.write_text("SELECT 1\nSELECT 1\n", encoding="utf-8")
    result = evaluate(gold, pred, db_dir, workers=1)
    assert result.per_question[1]["error"] == "database missing: ghost"
    assert result.scores["all"] == {"count": 1, "exec": 1.0}


def test_every_database_of_a_test_suite_must_agree(tmp_path, db_dir):
    # a second database where two singers share the top age tells LIMIT 1 from the full answer
    concert_database(
        tmp_path / "variant",
        singers=[(1, "A", "France", 40, None), (2, "B", "France", 40, None)],
        numbers=1,
    )
    (tmp_path / "variant" / "concert" / "concert.sqlite").rename(db_dir / "concert" / "concert_variant.sqlite")
    pairs = [
        ("SELECT name FROM singer WHERE age = (SELECT max(age) FROM singer)",
         "SELECT name FROM singer ORDER BY age DESC LIMIT 1"),
        ("SELECT name FROM singer WHERE age = (SELECT max(age) FROM singer)",
         "SELECT name FROM singer WHERE age >= (SELECT max(age) FROM singer)"),
    ]
    assert verdicts(tmp_path, db_dir, pairs) == [0, 1]


def test_hostile_predictions_are_wrong_and_harmless(tmp_path, db_dir):
    cross_join = "SELECT count(*) FROM numbers a, numbers b, numbers c, numbers d"
    hostile = [
        ("DROP TABLE singer", "refused: write statement"),
        ("DELETE FROM singer", "refused: write statement"),
        ("UPDATE singer SET age = 0", "refused: write statement"),
        ("INSERT INTO singer (name) VALUES ('x')", "refused: write statement"),
        (f"ATTACH DATABASE '{tmp_path / 'x.db'}' AS x", "refused: attach"),
        (f"VACUUM INTO '{tmp_path / 'copy.db'}'", "refused: write statement"),
        ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "timeout"),
        (cross_join, "timeout"),
        ("SELECT a.n FROM numbers a, numbers b, numbers c", "too many rows (gold has 6)"),
        ("SELECT randomblob(1e9)", None),
        ("SELECT zeroblob(1000000000)", None),
        ("SELECT count(*) FROM singer; DROP TABLE singer", "refused: more than one statement"),
        ("SELECT " + "name || " * 28_000 + "'x' FROM singer", None),  # a 200 KB line
        ("SELECT name FROM singer WHERE name = 'Zoë 東京'", "wrong result"),
    ]
    non_ascii_gold = "SELECT country FROM singer WHERE name = 'Zoë 東京'"
    pairs = [(non_ascii_gold if "Zoë" in sql else "SELECT name FROM singer", sql) for sql, _ in hostile]
    before = folder_digest(db_dir)
    start = time.monotonic()
    records = judge_pairs(tmp_path, db_dir, pairs, timeout=0.3, plug_value=True)
    assert time.monotonic() - start < 10
    for record, (sql, reason) in zip(records, hostile):
        assert record["exec"] == 0, sql[:80]
        assert record["error"], sql[:80]
        if reason is not None:
            assert record["error"] == reason, sql[:80]
    assert folder_digest(db_dir) == before
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "x.db").exists()


def test_workers_give_the_same_verdicts(tmp_path, db_dir):
    concert_database(db_dir, db_id="concert_b")
    gold = tmp_path / "gold.sql"
    pred = tmp_path / "pred.sql"
    questions = [
        ("SELECT name FROM singer WHERE age > 30", "SELECT name FROM singer WHERE age > 30", "concert"),
        ("SELECT name FROM singer WHERE age > 30", "SELECT name FROM singer WHERE age > 42", "concert_b"),
        ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer", "concert_b"),
        ("SELECT max(age) FROM singer", "SELECT min(age) FROM singer", "concert"),
    ] * 3
    gold.write_text("".join(f"{g}\t{db}\n" for g, _, db in questions), encoding="utf-8")
    pred.write_text("".join(f"{p}\n" for _, p, _ in questions), encoding="utf-8")
    serial = evaluate(gold, pred, db_dir, workers=1)
    parallel = evaluate(gold, pred, db_dir, workers=2)
    assert serial.per_question == parallel.per_question
    assert [r["index"] for r in parallel.per_question] == list(range(12))
    assert parallel.scores["all"] == {"count": 12, "exec": 0.5}


def test_format_table_has_the_reference_layout():
    scores = {level: {"count": 2, "exec": 0.5} for level in ("easy", "medium", "hard", "extra")}
    scores["all"] = {"count": 8, "exec": 0.5}
    lines = format_table(EvalResult(scores=scores, per_question=[])).splitlines()
    assert lines[0].split() == ["easy", "medium", "hard", "extra", "all"]
    assert lines[1].split() == ["count", "2", "2", "2", "2", "8"]
    assert lines[3].split() == ["execution", "0.500", "0.500", "0.500", "0.500", "0.500"]


def test_a_gold_with_non_ascii_text(tmp_path):
    make_database(
        tmp_path / "db" / "words" / "words.sqlite",
        "CREATE TABLE w (t TEXT); INSERT INTO w VALUES ('naïve'), ('東京'), ('plain');",
    )
    gold = tmp_path / "gold.sql"
    gold.write_text("SELECT t FROM w WHERE t != 'plain'\twords\n", encoding="utf-8")
    pred = tmp_path / "pred.sql"
    pred.write_text("SELECT t FROM w WHERE t IN ('東京', 'naïve')\n", encoding="utf-8")
    assert evaluate(gold, pred, tmp_path / "db", workers=1).per_question[0]["exec"] == 1


def test_plug_value_bound_can_only_lose_a_match(tmp_path, db_dir):
    """A match that the bounded search does not reach is judged wrong, and flagged."""
    from sqlora.evaluate import DatabaseCache, Question, Settings, judge

    gold = "SELECT name FROM singer WHERE age > 30 AND country = 'France' AND id < 5"
    # the right assignment needs every slot to take a value that is not its favourite
    pred = "SELECT name FROM singer WHERE id < 'France' AND country = 30 AND age > 5"
    question = Question(0, "concert", gold, pred)
    with DatabaseCache() as databases:
        bounded = judge(question, Settings(str(db_dir), plug_value=True, plug_limit=2), databases)
        unbounded = judge(question, Settings(str(db_dir), plug_value=True, plug_limit=1000), databases)
    assert bounded["exec"] == 0 and bounded["plug_capped"] is True and bounded["plug_tried"] == 2
    assert unbounded["exec"] == 1 and unbounded["plug_capped"] is False


def test_current_year_is_2020_like_the_reference(tmp_path, db_dir):
    pairs = [("SELECT 2020 - 1990", "SELECT YEAR(CURDATE()) - 1990")]
    assert verdicts(tmp_path, db_dir, pairs) == [1]


def test_connection_cache_closes_the_least_recently_used(tmp_path):
    from sqlora.evaluate import DatabaseCache

    paths = [make_database(tmp_path / f"d{i}.sqlite", "CREATE TABLE t (x)") for i in range(3)]
    with DatabaseCache(max_open=2) as databases:
        first = databases.get(paths[0])
        databases.get(paths[1])
        assert databases.get(paths[0]) is first
        databases.get(paths[2])  # closes paths[1], the least recently used
        assert databases.get(paths[0]) is first
        assert databases.get(paths[2]).run("SELECT count(*) FROM t").rows == [(0,)]
