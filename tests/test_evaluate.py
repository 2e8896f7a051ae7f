"""Judging rules of sqlora.eval.accuracy (the reference's semantics) on tiny databases."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path

import pytest
from eval_fixtures import concert_database, folder_digest, make_database, write_questions

import sqlora.eval.accuracy as evaluate_module
from sqlora.core.errors import SqloraError
from sqlora.eval.accuracy import (
    EvalResult,
    evaluate,
    evaluate_files,
    fill_placeholder,
    format_table,
    prepare_sql,
    results_match,
    worker_count,
)
from sqlora.eval.plugvalue import PlugSearch, gold_values
from sqlora.sql.sandbox import ReadOnlyDatabase
from sqlora.sql.tokens import tokenize

# a query that does not stop at its timeout fails its test in seconds
pytestmark = pytest.mark.timeout(20)


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


# (gold rows, predicted rows, right as multisets, right as lists), each worked out by hand from the
# reference's result_eq (exec_eval.py): the same number of rows and columns, the quick rejection on
# rows with their values sorted by str(value) + str(type(value)), then one column permutation
# that makes the rows equal as a multiset, or as a list when the gold has ORDER BY
RESULT_CASES = [
    # the rows in another order
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], True, False),
    # the columns in another order, rows in the same order; then both
    ([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], True, True),
    ([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], True, False),
    # swapping the columns puts the rows in the gold's order
    ([(1, 2), (2, 1)], [(2, 1), (1, 2)], True, True),
    # rows and columns pass every quick check, but no column order gives the gold's row order
    ([(1, 2), (1, 2), (2, 1)], [(2, 1), (1, 2), (1, 2)], True, False),
    # repeated rows count: the same set of rows is not enough
    ([(1,), (1,), (2,)], [(1,), (2,), (2,)], False, False),
    ([(1,), (1,), (2,)], [(1,), (2,), (1,)], True, False),
    ([(1, "a"), (1, "a"), (1, "b"), (2, "a"), (2, "b"), (2, "b")],
     [(1, "a"), (1, "b"), (1, "b"), (2, "a"), (2, "a"), (2, "b")], False, False),
    # one column order for every row, each column used once
    ([(1, 2), (3, 4)], [(1, 2), (4, 3)], False, False),
    ([(1, 1, 2), (1, 1, 2), (2, 2, 1)], [(1, 1, 2), (1, 2, 1), (2, 2, 1)], False, False),
    # each column holds the gold column's values, but not paired as in the gold's rows
    ([(1, "a"), (2, "b")], [(1, "b"), (2, "a")], False, False),
    ([(1, 2, 3), (4, 5, 6)], [(2, 1, 3), (4, 5, 6)], False, False),
    # NULL is a value like any other
    ([(None, 1), (2, None)], [(1, None), (None, 2)], True, True),
    ([(None,)], [(0,)], False, False),
    # text is compared exactly: case, spaces and type
    ([("France",)], [("france",)], False, False),
    ([("France",)], [("France ",)], False, False),
    ([(1,)], [("1",)], False, False),
    # 1 == 1.0; but the quick rejection sorts 1 after 1.5 and 1.0 before it (a quirk kept)
    ([(1, 2.5)], [(1.0, 2.5)], True, True),
    ([(1, 1.5)], [(1.0, 1.5)], False, False),
    ([(1, 1.5), (1.0, 1.5)], [(1.0, 1.5), (1, 1.5)], True, False),
    # another number of rows or columns
    ([(1,)], [(1,), (1,)], False, False),
    ([(1,), (1,)], [(1,)], False, False),
    ([(1, 2)], [(1,)], False, False),
    ([(1,)], [(1, 1)], False, False),
    # empty results
    ([], [], True, True),
    ([], [(1,)], False, False),
    ([(1,)], [], False, False),
]


@pytest.mark.parametrize(("gold", "pred", "as_multisets", "as_lists"), RESULT_CASES)
def test_results_match_like_the_reference(gold, pred, as_multisets, as_lists):
    assert results_match(gold, pred, order_matters=False) is as_multisets
    assert results_match(gold, pred, order_matters=True) is as_lists


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


# Ages: Joe Sharp 52, Timbaland 32, Justin Brown 29, Rose White 41, John Nizinik 43, Zoë 25; the
# table's own order (by id) is neither order by age.
# (gold with ORDER BY, the same rows in another order, the same rows in the gold's order)
ORDER_BY_GOLDS = [
    ("SELECT name FROM singer ORDER BY age", "SELECT name FROM singer", "SELECT name FROM singer ORDER BY age"),
    # 8 Spider dev gold queries are written in lower case
    ("select name from singer order by age", "SELECT name FROM singer ORDER BY age DESC",
     "SELECT name FROM singer ORDER BY age ASC"),
    ("SELECT name FROM singer Order By age;", "SELECT name FROM singer ORDER BY name",
     "SELECT name FROM singer ORDER BY age"),
    ("SELECT name FROM singer ORDER  BY age", "SELECT name FROM singer", "SELECT name FROM singer ORDER BY age"),
    # the reference looks for the words anywhere in the gold, a subquery included: the outer
    # rows (by id: Timbaland, Justin, Rose, John, Zoë) must then come in the same order
    ("select name from singer where id in (select id from singer order by age limit 5)",
     "SELECT name FROM singer WHERE age < 50 ORDER BY name", "SELECT name FROM singer WHERE age < 50"),
]


@pytest.mark.parametrize(("gold", "other_order", "same_order"), ORDER_BY_GOLDS)
def test_order_by_in_the_gold_however_written_makes_row_order_count(tmp_path, db_dir, gold, other_order,
                                                                     same_order):
    pairs = [(gold, gold), (gold, other_order), (gold, same_order)]
    assert verdicts(tmp_path, db_dir, pairs) == [1, 0, 1]
    without_order_by = "SELECT name FROM singer WHERE age < 50" if "limit" in gold else "SELECT name FROM singer"
    assert verdicts(tmp_path, db_dir, [(without_order_by, other_order)]) == [1]


def test_column_order_and_empty_results(tmp_path, db_dir):
    pairs = [
        ("SELECT name, age FROM singer", "SELECT age, name FROM singer"),
        ("SELECT name FROM singer WHERE age > 1000", "SELECT country, age FROM singer WHERE age < 0"),
        ("SELECT name FROM singer WHERE age > 1000", "SELECT name FROM singer"),
        ("SELECT name, age FROM singer", "SELECT name FROM singer"),
        # one row more than the gold's 3: stopped at the fourth
        ("SELECT name FROM singer WHERE age > 40", "SELECT name FROM singer WHERE age > 31"),
    ]
    records = judge_pairs(tmp_path, db_dir, pairs)
    assert [r["exec"] for r in records] == [1, 1, 0, 0, 0]
    assert records[2]["error"] == "too many rows (gold has 0)"
    assert records[3]["error"] == "wrong result (1 column, gold has 2)"
    assert records[4]["error"] == "too many rows (gold has 3)"


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


def test_spaced_comparison_operators_are_joined_in_both_queries(tmp_path, db_dir):
    pairs = [
        ("SELECT name FROM singer WHERE age >= 43", "SELECT name FROM singer WHERE age > = 43"),
        ("SELECT name FROM singer WHERE age < = 29", "SELECT name FROM singer WHERE age <= 29"),
        ("SELECT name FROM singer WHERE age ! = 29", "SELECT name FROM singer WHERE age ! = 29"),
    ]
    assert verdicts(tmp_path, db_dir, pairs) == [1, 1, 1]
    assert prepare_sql("a > = 1 AND b < = 2 AND c ! = 'x > = y'", True) == "a >= 1 AND b <= 2 AND c != 'x >= y'"


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


def test_plug_value_is_not_tried_where_no_value_can_help(tmp_path, db_dir):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c WHERE x > 5"
    gold = "SELECT name FROM singer WHERE age > 30"
    pairs = [
        (gold, "SELECT nme FROM singer WHERE age > 31"),       # a name no value repairs
        (gold, "SELECT name, age FROM singer WHERE age > 31"),  # another number of columns
        (gold, endless),                                        # each substitution would time out too
        (gold, "SELECT name FROM singer WHERE age > 45"),       # a value that the gold's 30 repairs
    ]
    records = judge_pairs(tmp_path, db_dir, pairs, plug_value=True, timeout=0.3)
    assert [r["exec"] for r in records] == [0, 0, 0, 1]
    assert [r["plug_tried"] for r in records] == [0, 0, 0, 1]
    assert [r["plug_capped"] for r in records] == [False, False, True, False]
    assert [r["error"] for r in records[:3]] == [
        "execution error: no such column: nme", "wrong result (2 columns, gold has 1)", "timeout"]


def test_scores_are_counted_by_the_gold_s_hardness(tmp_path, db_dir):
    pairs = [
        # easy gold, right with an extra-hard prediction
        ("SELECT count(*) FROM singer",
         "SELECT count(*) FROM singer WHERE age > (SELECT min(age) FROM singer) OR age < 100 ORDER BY 1 LIMIT 9"),
        # medium gold, wrong with an easy prediction
        ("SELECT name, age FROM singer", "SELECT name FROM singer"),
        ("SELECT name FROM singer WHERE age > 20 ORDER BY age LIMIT 3",
         "SELECT name FROM singer WHERE age > 20 ORDER BY age LIMIT 3"),
    ]
    result = evaluate(*write_questions(tmp_path, pairs), db_dir, workers=1)
    assert [r["hardness"] for r in result.per_question] == ["easy", "medium", "hard"]
    assert result.scores == {
        "easy": {"count": 1, "exec": 1.0}, "medium": {"count": 1, "exec": 0.0},
        "hard": {"count": 1, "exec": 1.0}, "extra": {"count": 0, "exec": 0.0},
        "all": {"count": 3, "exec": pytest.approx(2 / 3)},
    }


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


def test_plug_search_tries_every_assignment_of_the_gold_values_best_first():
    # slots 'y' (a string: 'x' first) and 4 (a number: 3 first); the reference tries the same four
    gold = "SELECT a FROM t WHERE b = 'x' AND c = 3"
    search = PlugSearch(gold, "SELECT a FROM t WHERE b = 'y' AND c = 4")
    assert list(search) == [
        "SELECT a FROM t WHERE b = 'x' AND c = 3",
        "SELECT a FROM t WHERE b = 'x' AND c = 'x'",
        "SELECT a FROM t WHERE b = 3 AND c = 3",
        "SELECT a FROM t WHERE b = 3 AND c = 'x'",
    ]
    assert search.space == 4 and search.produced == 4 and not search.capped
    # the prediction as written is not among them (the judge has run it already)
    assert list(PlugSearch(gold, gold)) == [
        "SELECT a FROM t WHERE b = 'x' AND c = 'x'",
        "SELECT a FROM t WHERE b = 3 AND c = 3",
        "SELECT a FROM t WHERE b = 3 AND c = 'x'",
    ]


# the slots of a query as the reference's sqlparse finds them: '...' and "..." strings and numbers;
# not names, aliases (T1) or keywords
SLOT_CASES = [
    ('SELECT T1.name FROM singer AS T1 WHERE T1.country = "France" AND T1.age > 30',
     ['"France"', "30"]),
    ("select count(*) from singer where name like '%a%' and age between 20.5 and 40 limit 3;",
     ["'%a%'", "20.5", "40", "3"]),
    ("SELECT name FROM singer WHERE country = 'France' OR country = 'France'", ["'France'"]),  # distinct
    ("SELECT a FROM t WHERE a = 'it''s' AND b = \"say \"\"hi\"\"\"", ["'it''s'", '"say ""hi"""']),
    ("SELECT count(*) FROM singer", []),
]


@pytest.mark.parametrize(("sql", "slots"), SLOT_CASES)
def test_plug_value_slots_are_the_reference_s(sql, slots):
    assert [token.text for token in gold_values(sql)] == slots
    # every slot of a prediction takes every gold value: here the one value X
    if slots:
        candidates = list(PlugSearch("SELECT 'X'", sql, limit=1000))
        assert len(candidates) == 1
        assert candidates[0].count("'X'") == len([t for t in tokenize(sql) if t.is_literal])


# (gold, prediction): the first substitution tried is the gold value that the slot holds already,
# else the same value in another case, else one of the same type, the most similar or nearest,
# else the one at the same place among values of that type
FIRST_GUESSES = [
    ("SELECT a FROM t WHERE b = 'France' AND c = 'Spain'", "SELECT a FROM t WHERE c = 'spain'",
     "SELECT a FROM t WHERE c = 'Spain'"),
    ('SELECT a FROM t WHERE b = "France"', "SELECT a FROM t WHERE b = 'france'",
     'SELECT a FROM t WHERE b = "France"'),
    ("SELECT a FROM t WHERE b = 'Paris' AND c = 'London'", "SELECT a FROM t WHERE b = 'Londn'",
     "SELECT a FROM t WHERE b = 'London'"),
    ("SELECT a FROM t WHERE b = 10 AND c = 100", "SELECT a FROM t WHERE b = 90", "SELECT a FROM t WHERE b = 100"),
    ("SELECT a FROM t WHERE b = 'x' AND c = 7", "SELECT a FROM t WHERE b = 8", "SELECT a FROM t WHERE b = 7"),
    ("SELECT a FROM t WHERE b = 'p' AND c = 'q'", "SELECT a FROM t WHERE b = 'zz' AND c = 'yy'",
     "SELECT a FROM t WHERE b = 'p' AND c = 'q'"),
    # the same text before the same value otherwise written
    ("SELECT a FROM t WHERE b = \"France\" OR c = 'France' AND d = 4", "SELECT a FROM t WHERE c = 'France' AND d = 3",
     "SELECT a FROM t WHERE c = 'France' AND d = 4"),
    # a number the gold writes as a string ('2010' for 2010) before another number
    ("SELECT a FROM t WHERE b = '3' AND c = 30", "SELECT a FROM t WHERE b = 3", "SELECT a FROM t WHERE b = '3'"),
    # a string before a number, even for the sixth string of the prediction
    ("SELECT a FROM t WHERE b = 'a' AND c = 7", "SELECT a FROM t WHERE b IN ('p', 'q', 'r', 's', 'u', 'v')",
     "SELECT a FROM t WHERE b IN ('a', 'a', 'a', 'a', 'a', 'a')"),
]


@pytest.mark.parametrize(("gold", "pred", "first"), FIRST_GUESSES)
def test_plug_search_first_guess(gold, pred, first):
    assert next(iter(PlugSearch(gold, pred))) == first


def test_plug_search_gives_up_past_32_slots():
    gold = "SELECT a FROM t WHERE b = 1"
    for slots, expected in ((32, 1), (33, 0)):
        pred = "SELECT a FROM t WHERE b IN (" + ", ".join(["2"] * slots) + ")"
        search = PlugSearch(gold, pred)
        assert len(list(search)) == expected
        assert search.capped is (expected == 0)


# Spider's ways of writing gold queries, each right as its own prediction; each prediction below
# has other values, wrong as written and right with the gold's values plugged in
SPIDER_STYLE = [
    ('SELECT name FROM singer WHERE country  =  "France"', 'SELECT name FROM singer WHERE country = "france"'),
    ("select count(*) from singer where age  >  30;", "select count(*) from singer where age > 45"),
    ("SELECT T1.name FROM singer AS T1 WHERE T1.age BETWEEN 30 AND 45",
     "SELECT T1.name FROM singer AS T1 WHERE T1.age BETWEEN 20 AND 35"),
    ("SELECT name FROM singer WHERE name LIKE '%o%' ORDER BY age DESC LIMIT 2",
     "SELECT name FROM singer WHERE name LIKE '%a%' ORDER BY age DESC LIMIT 3"),
    ("SELECT country ,  count(*) FROM singer GROUP BY country HAVING count(*)  >  1",
     "SELECT country, count(*) FROM singer GROUP BY country HAVING count(*) > 3"),
    ("SELECT avg(age) FROM singer WHERE country != 'France'", "SELECT avg(age) FROM singer WHERE country != 'Japan'"),
    ("SELECT name FROM singer WHERE age > 40 EXCEPT SELECT name FROM singer WHERE country = 'France'",
     "SELECT name FROM singer WHERE age > 'France' EXCEPT SELECT name FROM singer WHERE country = 40"),
    ("SELECT count(DISTINCT country) FROM singer WHERE age < 50",
     "SELECT count(DISTINCT country) FROM singer WHERE age < 30"),
]


def test_spider_style_golds_as_predictions_are_right(tmp_path, db_dir):
    assert verdicts(tmp_path, db_dir, [(gold, gold) for gold, _ in SPIDER_STYLE]) == [1] * len(SPIDER_STYLE)


def test_plug_value_recovers_the_gold_s_values(tmp_path, db_dir):
    assert verdicts(tmp_path, db_dir, SPIDER_STYLE) == [0] * len(SPIDER_STYLE)
    assert verdicts(tmp_path, db_dir, SPIDER_STYLE, plug_value=True) == [1] * len(SPIDER_STYLE)


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
    from sqlora.eval.accuracy import Question, Settings, judge
    from sqlora.sql.sandbox import DatabaseCache

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


# --- the reference's "value" placeholder ------------------------------------------------------


def test_fill_placeholder_is_a_plain_lower_case_substring_replace():
    sql = "SELECT value, values, value_id, Value, VALUE FROM t WHERE x = 'value' LIMIT value"
    assert fill_placeholder(sql) == "SELECT 1, 1s, 1_id, Value, VALUE FROM t WHERE x = '1' LIMIT 1"
    assert fill_placeholder("SELECT 1") == "SELECT 1"


PLACEHOLDER_PAIRS = [
    # the placeholder where a value goes: judged as 1
    ("SELECT name FROM singer ORDER BY age LIMIT 1", "SELECT name FROM singer ORDER BY age LIMIT value"),
    ("SELECT name FROM singer WHERE id = 1", "SELECT name FROM singer WHERE id = value"),
    # anywhere in the text, names and strings included, like the reference
    ("SELECT 1 FROM singer", "SELECT value FROM singer"),
    ("SELECT '1s'", "SELECT 'values'"),
    # upper case is left alone
    ("SELECT name FROM singer WHERE id = 1", "SELECT name FROM singer WHERE id = VALUE"),
    # the gold is never rewritten
    ("SELECT 'value'", "SELECT 'value'"),
    # as 1 it is wrong; under plug-value the 1 is a slot that takes the gold's 50
    ("SELECT name FROM singer WHERE age > 50", "SELECT name FROM singer WHERE age > value"),
    ("SELECT name FROM singer ORDER BY age DESC LIMIT 3", "SELECT name FROM singer ORDER BY age DESC LIMIT value"),
]


def test_value_placeholder_strict(tmp_path, db_dir):
    records = judge_pairs(tmp_path, db_dir, PLACEHOLDER_PAIRS)
    assert [r["exec"] for r in records] == [1, 1, 1, 1, 0, 0, 0, 0]
    assert records[4]["error"] == "execution error: no such column: VALUE"
    assert records[5]["error"] == "wrong result"
    assert records[6]["error"] == "too many rows (gold has 1)"
    assert records[7]["error"] == "wrong result"
    # the per-question record keeps the prediction as written
    assert [r["pred"] for r in records] == [pred for _, pred in PLACEHOLDER_PAIRS]


def test_value_placeholder_plug_value(tmp_path, db_dir):
    records = judge_pairs(tmp_path, db_dir, PLACEHOLDER_PAIRS, plug_value=True)
    # 'value' in a string is a slot too: under plug-value the gold's own 'value' fills it
    assert [r["exec"] for r in records] == [1, 1, 1, 1, 0, 1, 1, 1]
    assert records[4]["error"] == "execution error: no such column: VALUE"
    assert records[4]["plug_tried"] == 0  # a compile error: no value can repair it
    assert records[6]["plug_tried"] >= 1 and records[7]["plug_tried"] >= 1


# --- one pass over several prediction files and both modes ----------------------------------------


# (gold, prediction of file a, prediction of file b); no prediction, as written or with gold
# values plugged in, has the text of its gold (the test below counts runs by text)
ONE_PASS_QUESTIONS = [
    ("SELECT name FROM singer WHERE country = 'France'", "select name FROM singer WHERE country = 'france'",
     "SELECT name  FROM singer WHERE country = 'France'"),
    ("SELECT count(*) FROM singer", "SELECT count(*)  FROM singer", ""),
    ("SELECT name FROM singer WHERE age > 40", "SELECT name FROM singer WHERE age >  30",
     "SELEC name FROM singer"),
    ("SELECT max(age) FROM singer", "SELECT min(age) FROM singer", "SELECT max(age)  FROM singer"),
    ("SELECT 1 AS one", "SELECT value", "DROP TABLE singer"),
]


def write_two_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    gold, pred_a = write_questions(tmp_path, [(g, a) for g, a, _ in ONE_PASS_QUESTIONS])
    pred_b = tmp_path / "pred_b.sql"
    pred_b.write_text("".join(f"{b}\n" for _, _, b in ONE_PASS_QUESTIONS), encoding="utf-8")
    return gold, pred_a, pred_b


@pytest.mark.parametrize("workers", [1, 2])
def test_one_pass_gives_what_separate_runs_give(tmp_path, db_dir, workers):
    gold, pred_a, pred_b = write_two_files(tmp_path)
    together = evaluate_files(gold, [pred_a, pred_b], db_dir, plug_values=(False, True), workers=workers)
    assert len(together) == 2 and all(set(by_mode) == {False, True} for by_mode in together)
    for pred, by_mode in zip((pred_a, pred_b), together):
        for plug_value, result in by_mode.items():
            alone = evaluate(gold, pred, db_dir, plug_value=plug_value, workers=workers)
            assert result.per_question == alone.per_question
            assert result.scores == alone.scores
    assert [r["exec"] for r in together[0][False].per_question] == [0, 1, 0, 0, 1]
    assert [r["exec"] for r in together[0][True].per_question] == [1, 1, 1, 0, 1]
    assert [r["exec"] for r in together[1][False].per_question] == [1, 0, 0, 1, 0]


def test_one_pass_runs_each_gold_once_per_database_and_each_prediction_once(tmp_path, db_dir, monkeypatch):
    concert_database(tmp_path / "variant", singers=[(1, "A", "France", 40, None)], numbers=1)
    (tmp_path / "variant" / "concert" / "concert.sqlite").rename(db_dir / "concert" / "concert_variant.sqlite")
    runs: Counter = Counter()
    original_run = ReadOnlyDatabase.run

    def counting_run(self, sql, **options):
        runs[sql] += 1
        return original_run(self, sql, **options)

    monkeypatch.setattr(ReadOnlyDatabase, "run", counting_run)
    gold, pred_a, pred_b = write_two_files(tmp_path)
    evaluate_files(gold, [pred_a, pred_b], db_dir, plug_values=(False, True), workers=1)
    for gold_sql, a, b in ONE_PASS_QUESTIONS:
        assert runs[gold_sql] == 2, gold_sql  # two databases, once each
        for pred in (a, b):
            if pred.strip() and not pred.startswith("DROP"):
                # as written: once per database at most (a wrong result stops at the first)
                assert 1 <= runs[fill_placeholder(pred)] <= 2, pred


def test_no_mode_is_an_error(tmp_path, db_dir):
    gold, pred_a, _ = write_two_files(tmp_path)
    with pytest.raises(SqloraError, match="plug_values"):
        evaluate_files(gold, [pred_a], db_dir, plug_values=())


def test_each_prediction_file_must_pair_with_the_gold(tmp_path, db_dir):
    gold, pred_a, pred_b = write_two_files(tmp_path)
    pred_b.write_text("SELECT 1\n", encoding="utf-8")
    with pytest.raises(SqloraError, match=r"5 gold lines .* 1 prediction lines"):
        evaluate_files(gold, [pred_a, pred_b], db_dir)


# --- worker processes on Windows ------------------------------------------------------------------


def test_workers_are_capped_at_61_on_windows(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.setattr(sys, "platform", "win32")
    assert worker_count(None) == 61 and worker_count(0) == 61 and worker_count(100) == 61
    assert worker_count(8) == 8 and worker_count(1) == 1
    monkeypatch.setattr(sys, "platform", "linux")
    assert worker_count(None) == 128 and worker_count(100) == 100
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert worker_count(None) == 1


class WindowsLikePool:
    """ProcessPoolExecutor as Windows has it (at most 61 workers), running tasks in this process."""

    sizes: list[int] = []

    def __init__(self, max_workers, mp_context=None):
        if max_workers > 61:
            raise ValueError("max_workers must be <= 61")
        WindowsLikePool.sizes.append(max_workers)

    def submit(self, function, *args):
        future = Future()
        future.set_result(function(*args))
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None


def test_a_machine_with_128_cpus_on_windows_evaluates(tmp_path, db_dir, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(evaluate_module, "ProcessPoolExecutor", WindowsLikePool)
    monkeypatch.setattr(evaluate_module, "_PROCESS_DATABASES", None)
    WindowsLikePool.sizes = []
    pairs = [("SELECT count(*) FROM singer", "SELECT count(*) FROM singer")] * 200
    try:
        result = evaluate(*write_questions(tmp_path, pairs), db_dir, workers=None)
    finally:
        if evaluate_module._PROCESS_DATABASES is not None:
            evaluate_module._PROCESS_DATABASES.close()
    assert WindowsLikePool.sizes == [61]
    assert result.scores["all"] == {"count": 200, "exec": 1.0}
