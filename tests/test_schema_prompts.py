"""Schema text from tables.json, chat prompts, and SQL pulled out of generations."""

from __future__ import annotations

import pytest

from sqlora.prompts import SYSTEM_PROMPT, build_prompt, clean_sql, extract_sql
from sqlora.schema import FORMATS, load_schemas, serialize_schema
from tiny_spider import DATABASES


@pytest.fixture
def schemas(tiny_spider):
    return load_schemas(tiny_spider / "tables.json")


def test_load_schemas(schemas):
    assert set(schemas) == set(DATABASES)
    assert schemas["school"]["primary_keys"][-1] == [10, 11]  # composite key as a list


def test_compact(schemas):
    assert serialize_schema(schemas["concert"], "compact") == "\n".join([
        "stadium(stadium_id*, name, location, capacity)",
        "singer(singer_id*, name, country, age, is_male)",
        "concert(concert_id*, concert_name, theme, stadium_id, year, date)",
        "singer_in_concert(concert_id*, singer_id*)",
        "-- foreign keys:",
        "concert.stadium_id = stadium.stadium_id",
        "singer_in_concert.concert_id = concert.concert_id",
        "singer_in_concert.singer_id = singer.singer_id",
    ])
    assert serialize_schema(schemas["missing_db"], "compact") == "airline(airline_id*, name, country)"


def test_ddl(schemas):
    assert serialize_schema(schemas["school"], "ddl") == "\n".join([
        "CREATE TABLE student (student_id number, name text, major text, age number, city text, "
        "PRIMARY KEY (student_id));",
        "CREATE TABLE course (course_id number, title text, department text, credits number, "
        "PRIMARY KEY (course_id));",
        "CREATE TABLE enrollment (student_id number, course_id number, grade number, "
        "PRIMARY KEY (student_id, course_id), FOREIGN KEY (student_id) REFERENCES student(student_id), "
        "FOREIGN KEY (course_id) REFERENCES course(course_id));",
    ])


def test_names(schemas):
    assert serialize_schema(schemas["shop"], "names") == (
        "product: product_id, name, category, price\n"
        "orders: order_id, product_id, quantity, order_date, customer_name")


def test_odd_names_are_quoted_and_old_style_composite_keys():
    db = {"db_id": "x", "table_names_original": ["people", "pet"],
          "column_names_original": [[-1, "*"], [0, "id"], [0, "Home Town"], [1, "owner_id"], [1, "name"]],
          "column_types": ["text", "number", "text", "number", "text"],
          "primary_keys": [1, 3, 4], "foreign_keys": [[3, 1]]}
    assert serialize_schema(db, "compact") == (
        'people(id*, "Home Town")\npet(owner_id*, name*)\n-- foreign keys:\npet.owner_id = people.id')
    assert serialize_schema(db, "ddl") == (
        'CREATE TABLE people (id number, "Home Town" text, PRIMARY KEY (id));\n'
        "CREATE TABLE pet (owner_id number, name text, PRIMARY KEY (owner_id, name), "
        "FOREIGN KEY (owner_id) REFERENCES people(id));")


def test_unknown_format(schemas):
    assert FORMATS == ("compact", "ddl", "names")
    with pytest.raises(ValueError, match="allowed values are compact, ddl, names"):
        serialize_schema(schemas["shop"], "json")


def test_build_prompt():
    messages = build_prompt("t(a*, b)", "  How many t are there? ")
    assert messages == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Database schema:\nt(a*, b)\n\nQuestion: How many t are there?\nSQL:"},
    ]


@pytest.mark.parametrize("generation, expected", [
    ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
    ("  SELECT name\nFROM   singer\n\tWHERE age > 30 ", "SELECT name FROM singer WHERE age > 30"),
    ("SELECT name FROM singer;", "SELECT name FROM singer"),
    ("SELECT a FROM t; SELECT b FROM u;", "SELECT a FROM t"),
    ("```sql\nSELECT name\nFROM singer\n```", "SELECT name FROM singer"),
    ("```SQL\nSELECT 1 FROM t;\n```\nThis returns one.", "SELECT 1 FROM t"),
    ("```\nSELECT x FROM t\n```", "SELECT x FROM t"),
    ("```sql\nSELECT x FROM t", "SELECT x FROM t"),  # fence left open by max_new_tokens
    ("```sql SELECT x FROM t```", "SELECT x FROM t"),
    ("SELECT `my col` FROM t", "SELECT `my col` FROM t"),
    ("Here is the query:\n```sql\nSELECT x FROM t;\n```", "SELECT x FROM t"),
    ("SQL: SELECT name FROM singer", "SELECT name FROM singer"),
    ("SQL:\nSELECT name FROM singer", "SELECT name FROM singer"),
    ("select name from singer", "select name from singer"),
    ("SELECT name FROM singer<|im_end|>", "SELECT name FROM singer"),
    ("SELECT name FROM singer</s>garbage", "SELECT name FROM singer"),
    ("SELECT name FROM singer<|endoftext|><|im_start|>user", "SELECT name FROM singer"),
    ("SELECT name FROM singer WHERE name = 'a;b'; DROP TABLE x",
     "SELECT name FROM singer WHERE name = 'a;b'"),
    ("SELECT name FROM t WHERE name = 'it''s; fine';", "SELECT name FROM t WHERE name = 'it''s; fine'"),
    ('SELECT "semi;colon" FROM t;', 'SELECT "semi;colon" FROM t'),
    ("SELECT a FROM t WHERE b = 'New  York'", "SELECT a FROM t WHERE b = 'New  York'"),
    ("SELECT name FROM singer\n\nThis query lists all singers.", "SELECT name FROM singer"),
    ("SELECT name FROM singer\nExplanation: it lists singers", "SELECT name FROM singer"),
    ("SELECT name FROM singer\nQuestion: How many singers?\nSQL: SELECT count(*) FROM singer",
     "SELECT name FROM singer"),
    ("The answer is SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
    ("I will select the singers.\nSELECT name FROM singer", "SELECT name FROM singer"),
    ("SELECT name -- the name\nFROM singer", "SELECT name FROM singer"),
    ("<think>select what? maybe count</think>\nSELECT count(*) FROM t", "SELECT count(*) FROM t"),
    ("WITH x AS (SELECT a FROM t) SELECT a FROM x;", "WITH x AS (SELECT a FROM t) SELECT a FROM x"),
    ("Query with a join: SELECT a FROM t JOIN u ON t.id = u.id", "SELECT a FROM t JOIN u ON t.id = u.id"),
    ("(SELECT a FROM t) UNION (SELECT a FROM u)", "(SELECT a FROM t) UNION (SELECT a FROM u)"),
    ("SELECT a FROM t WHERE b = 'line\nbreak'", "SELECT a FROM t WHERE b = 'line break'"),
    ("", ""),
    ("   \n ", ""),
    ("I don't know.", ""),
    ("<|im_end|>", ""),
    ("```\n\n```", ""),
])
def test_extract_sql(generation, expected):
    assert extract_sql(generation) == expected


def test_clean_sql():
    assert clean_sql("SELECT  a ,  b\nFROM t ;") == "SELECT a , b FROM t"
    assert clean_sql("SELECT 'a  b'  FROM t") == "SELECT 'a  b' FROM t"
