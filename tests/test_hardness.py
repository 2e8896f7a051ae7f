"""Spider hardness: hand-derived classes for each rule, and the counts on the real dev set
(when $SQLORA_SPIDER_ZIP names spider_data.zip)."""

from __future__ import annotations

import zipfile
from collections import Counter

import pytest
from eval_fixtures import spider_zip_path

from sqlora.eval.hardness import count_component1, count_component2, count_others, hardness, parse_shape
from sqlora.sql.tokens import Token, significant, tokenize

# (sql, component1, component2, others, class); the numbers are derived by hand from the rules
CASES = [
    # nothing at all
    ("SELECT count(*) FROM singer", 0, 0, 0, "easy"),
    # one WHERE; one condition is not "more than one"
    ("SELECT name FROM singer WHERE age > 20", 1, 0, 0, "easy"),
    # BETWEEN's AND joins no conditions
    ("SELECT name FROM singer WHERE age BETWEEN 20 AND 30", 1, 0, 0, "easy"),
    # a two-table join is one beyond the first table
    ("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.singer_id", 1, 0, 0, "easy"),
    # a subquery in FROM is a table unit, not a nested query
    ("SELECT count(*) FROM (SELECT name FROM a INTERSECT SELECT name FROM b)", 0, 0, 0, "easy"),
    # two SELECT columns: others 1, component1 0 -> medium (first medium rule)
    ("SELECT name, age FROM singer", 0, 0, 1, "medium"),
    # WHERE + ORDER BY: component1 2, others 0 -> medium (second medium rule)
    ("SELECT name FROM singer WHERE age > 20 ORDER BY age", 2, 0, 0, "medium"),
    # two WHERE conditions: the reference's list [cond, 'and', cond] has length 3 > 1
    ("SELECT name FROM singer WHERE age > 20 AND age < 30", 1, 0, 1, "medium"),
    # OR adds to component1 (WHERE 1 + OR 1), two conditions add to others
    ("SELECT name FROM singer WHERE age > 20 OR age < 10", 2, 0, 1, "medium"),
    # LIKE adds to component1
    ("SELECT name FROM singer WHERE name LIKE '%a%'", 2, 0, 0, "medium"),
    # quirk: a negated condition counts as an aggregate: count(*) + NOT IN = 2 aggregates
    ("SELECT count(*) FROM singer WHERE country NOT IN ('a', 'b')", 1, 0, 1, "medium"),
    # three joined tables: 2 beyond the first
    ("SELECT a.x FROM a JOIN b ON a.id = b.id JOIN c ON b.id = c.id", 2, 0, 0, "medium"),
    # GROUP BY with two columns: others 1 (group by) + 1 (select)
    ("SELECT country, age FROM singer GROUP BY country, age", 1, 0, 2, "medium"),
    # WHERE + ORDER BY + LIMIT: 2 < component1 <= 3 -> hard
    ("SELECT name FROM singer WHERE age > 20 ORDER BY age LIMIT 3", 3, 0, 0, "hard"),
    # one nested query, nothing else -> hard (third hard rule)
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", 1, 1, 0, "hard"),
    ("SELECT name FROM a EXCEPT SELECT name FROM b", 0, 1, 0, "hard"),
    # others 3 (2 aggregates, 3 columns, 2 WHERE conditions) with component1 2 -> hard
    (
        "SELECT name, count(*), max(age) FROM singer WHERE a = 1 AND b = 2 GROUP BY name",
        2, 0, 3, "hard",
    ),
    # a set operation with two columns: component2 1 and others 1 -> extra
    ("SELECT name, age FROM a UNION SELECT name, age FROM b", 0, 1, 1, "extra"),
    # join of three tables + WHERE + ORDER BY: component1 4 -> extra
    (
        "SELECT a.x FROM a JOIN b ON a.id = b.id JOIN c ON b.id = c.id WHERE a.y = 1 ORDER BY a.x",
        4, 0, 0, "extra",
    ),
    # two nested queries
    ("SELECT x FROM a WHERE y IN (SELECT y FROM b) AND z IN (SELECT z FROM c)", 1, 2, 1, "extra"),
    # HAVING is not in component1, but its AND connector counts as an aggregate (reference quirk)
    (
        "SELECT country, count(*) FROM singer GROUP BY country HAVING count(*) > 1 AND avg(age) > 20",
        1, 0, 2, "medium",
    ),
    # ORDER BY an aggregate counts as an aggregate: count(*) in SELECT + in ORDER BY
    (
        "SELECT country, count(*) FROM singer GROUP BY country ORDER BY count(*) DESC LIMIT 1",
        3, 0, 2, "hard",
    ),
    # --- each bound of each rule, from both sides (component1, component2, others)
    # (0, 0, 2): two aggregates and two columns -> medium (first medium rule)
    ("SELECT count(*), max(age) FROM singer", 0, 0, 2, "medium"),
    # (1, 0, 2) -> medium; (1, 0, 3) -> hard (first hard rule)
    ("SELECT name, age FROM singer WHERE a = 1 AND b = 2", 1, 0, 2, "medium"),
    ("SELECT name, count(*), max(age) FROM singer WHERE a = 1 AND b = 2", 1, 0, 3, "hard"),
    # (2, 0, 1) -> medium (second medium rule); (2, 0, 2) -> no rule but extra
    ("SELECT name, age FROM singer WHERE age > 1 ORDER BY age", 2, 0, 1, "medium"),
    ("SELECT name, count(*) FROM singer WHERE a = 1 AND b = 2 ORDER BY age", 2, 0, 2, "extra"),
    # (3, 0, 1) and (3, 0, 2) -> hard (second hard rule); (3, 0, 3) -> extra
    ("SELECT name, age FROM singer WHERE age > 1 ORDER BY age LIMIT 1", 3, 0, 1, "hard"),
    ("SELECT name, age FROM singer WHERE a = 1 AND b = 2 ORDER BY age LIMIT 1", 3, 0, 2, "hard"),
    (
        "SELECT name, count(*), max(age) FROM singer WHERE a = 1 AND b = 2 GROUP BY name ORDER BY name",
        3, 0, 3, "extra",
    ),
    # (4, 0, 0) -> extra: four clauses, nothing else
    ("SELECT name FROM singer WHERE age > 1 GROUP BY name ORDER BY age LIMIT 1", 4, 0, 0, "extra"),
    # (1, 1, 1), (2, 1, 0) and (1, 2, 0) -> extra; (1, 1, 0) is hard (above)
    ("SELECT name, age FROM singer WHERE age > (SELECT avg(age) FROM singer)", 1, 1, 1, "extra"),
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer) ORDER BY age", 2, 1, 0, "extra"),
    ("SELECT name FROM a WHERE id IN (SELECT id FROM b) EXCEPT SELECT name FROM c", 1, 2, 0, "extra"),
    # --- what each count looks at
    # Spider's dev set: lower case, double spaces, a trailing semicolon
    ("select t2.name ,  t2.capacity from concert as t1 join stadium as t2 on t1.stadium_id  =  t2.stadium_id "
     "where t1.year  >  2013 group by t2.stadium_id order by count(*) desc limit 1;", 5, 0, 1, "extra"),
    # OR and LIKE in a join's ON condition count too
    ("SELECT a.x FROM a JOIN b ON a.id = b.id OR a.y LIKE b.y", 3, 0, 0, "hard"),
    # a nested query in ON and in HAVING
    ("SELECT a.x FROM a JOIN b ON a.id = (SELECT max(id) FROM c)", 1, 1, 0, "hard"),
    ("SELECT x FROM a GROUP BY x HAVING count(*) > (SELECT count(*) FROM b)", 1, 1, 0, "hard"),
    # comma-joined tables and a parenthesised group of conditions, whose parts count one by one
    ("SELECT a.x FROM a, b WHERE (a.id = b.id OR a.y = 2)", 3, 0, 1, "hard"),
    # NOT LIKE: LIKE for component1, a negation (an aggregate by the quirk) for others
    ("SELECT count(*) FROM singer WHERE name NOT LIKE '%a%'", 2, 0, 1, "medium"),
    # in HAVING too: count(*) and the negation make two aggregates
    ("SELECT country, count(*) FROM singer GROUP BY country HAVING max(name) NOT LIKE '%a%'", 2, 0, 2, "extra"),
    # DISTINCT is not a column; a nested query in SELECT is not looked into
    ("SELECT DISTINCT name FROM singer", 0, 0, 0, "easy"),
    ("SELECT name, (SELECT max(age) FROM singer) FROM singer", 0, 0, 1, "medium"),
    # an ORDER BY item with two aggregates counts both; max(a) - min(a) in SELECT counts once
    ("SELECT name FROM singer GROUP BY name ORDER BY max(age) - min(age)", 2, 0, 1, "medium"),
    ("SELECT max(age) - min(age) FROM singer", 0, 0, 0, "easy"),
    # GROUP BY with one column and HAVING with one condition: no "more than one"
    ("SELECT country FROM singer GROUP BY country HAVING count(*) > 1", 1, 0, 0, "easy"),
    # a leading WITH is skipped: the main SELECT is measured
    ("WITH a AS (SELECT x, y FROM b WHERE x > 1) SELECT x FROM a", 0, 0, 0, "easy"),
    ("WITH a AS (SELECT x FROM b), c AS (SELECT x FROM d) SELECT x FROM a", 0, 0, 0, "easy"),
    # DISTINCT before an aggregate; names that are aggregates' names but no calls
    ("SELECT DISTINCT max(age), min(age) FROM singer", 0, 0, 2, "medium"),
    ("SELECT max, min FROM stats", 0, 0, 1, "medium"),
    ("SELECT max AS top, min AS bottom FROM stats", 0, 0, 1, "medium"),
    # a NOT inside the nested query does not make the outer condition negated
    ("SELECT count(*) FROM a WHERE id IN (SELECT id FROM b WHERE x NOT IN (SELECT x FROM c))", 1, 1, 0, "hard"),
]


@pytest.mark.parametrize(("sql", "component1", "component2", "others", "expected"), CASES)
def test_hardness_rules(sql, component1, component2, others, expected):
    shape = parse_shape(sql)
    assert (count_component1(shape), count_component2(shape), count_others(shape)) == (
        component1,
        component2,
        others,
    )
    assert hardness(sql) == expected


def test_case_and_spacing_do_not_matter():
    assert hardness("select  NAME ,  AGE from SINGER where AGE  >  20 order by AGE limit 3;") == "hard"


def test_tokenize_gives_the_text_back():
    sql = "SELECT \"a\"\"b\", 'it''s', `x`, [y], 1.5e3, 0x1F FROM t -- c\n/* d */ WHERE é != 'ü' >= ;"
    assert "".join(token.text for token in tokenize(sql)) == sql
    kinds = [token.kind for token in tokenize(sql) if token.kind not in ("space", "comment")]
    assert kinds[:2] == ["word", "quoted"]
    assert "number" in kinds and "ident" in kinds and "string" in kinds


def test_one_tokenizer_for_the_guard_the_metric_and_plug_value():
    import sqlora.eval.accuracy
    import sqlora.eval.hardness
    import sqlora.eval.plugvalue
    import sqlora.sql.sandbox
    import sqlora.sql.tokens

    for module in (sqlora.eval.hardness, sqlora.eval.plugvalue, sqlora.sql.sandbox, sqlora.eval.accuracy):
        assert module.tokenize is sqlora.sql.tokens.tokenize, module.__name__
    tokens = tokenize("SELECT a -- why\n FROM t /* c */ ;")
    assert [t.text for t in significant(tokens)] == ["SELECT", "a", "FROM", "t", ";"]
    assert [t.kind for t in tokens if t.kind == "comment"] == ["comment", "comment"]
    assert [t.is_literal for t in tokenize("'a' \"b\" 3 c")] == [True, False, True, False, True, False, False]
    assert Token("word", "SeLeCt").low == "select"


@pytest.mark.parametrize(("sql", "expected"), [
    # nothing to count
    ("", "easy"),
    ("DROP TABLE x", "easy"),
    ("x" * 10_000, "easy"),
    # cut off mid-query: the clauses written so far count
    ("SELECT a, b FROM t WHERE (((", "medium"),
    ("SELECT a FROM t WHERE x IN (SELECT", "hard"),
    ("SELECT a, count(*) FROM t JOIN u ON t.id = u.id WHERE t.x > 1 ORDER BY", "hard"),
    # a stray closing parenthesis ends the query; a query in parentheses; a WITH clause
    ("SELECT a FROM t WHERE x = 1)) ORDER BY a LIMIT 3", "easy"),
    ("(SELECT a, b FROM t)", "medium"),
    ("WITH a AS (SELECT 1) SELECT x, y FROM a WHERE x > 1 ORDER BY y LIMIT 3", "hard"),
])
def test_unknown_or_broken_sql_gets_the_class_of_what_it_has(sql, expected):
    assert hardness(sql) == expected


def _dev_gold_lines() -> tuple[list[tuple[str, str]], set[str]]:
    spider_zip = spider_zip_path()
    with zipfile.ZipFile(spider_zip) as archive:
        text = archive.read("spider_data/dev_gold.sql").decode("utf-8")
        present = {
            name.split("/")[2]
            for name in archive.namelist()
            if name.startswith("spider_data/database/") and name.endswith(".sqlite")
        }
    pairs = [tuple(line.rsplit("\t", 1)) for line in text.splitlines() if line.strip()]
    return pairs, present


def test_real_spider_dev_counts_match_the_reference():
    pairs, present = _dev_gold_lines()
    assert len(pairs) == 1034
    all_counts = Counter(hardness(sql) for sql, _ in pairs)
    executable = Counter(hardness(sql) for sql, db_id in pairs if db_id in present)
    order = ("easy", "medium", "hard", "extra")
    assert [all_counts[level] for level in order] == [248, 446, 174, 166]
    assert [executable[level] for level in order] == [232, 416, 160, 164]


def test_every_real_spider_gold_query_is_within_spiders_grammar():
    """gold_hardness rates every gold query of Spider's dev and train sets: none is n/a."""
    from sqlora.eval.hardness import outside_spider_grammar

    pairs, _ = _dev_gold_lines()
    with zipfile.ZipFile(spider_zip_path()) as archive:
        train = archive.read("spider_data/train_gold.sql").decode("utf-8")
    pairs += [tuple(line.rsplit("\t", 1)) for line in train.splitlines() if line.strip()]
    assert len(pairs) > 9000
    outside = [(sql, outside_spider_grammar(sql)) for sql, _ in pairs if outside_spider_grammar(sql)]
    assert not outside, outside[:5]
