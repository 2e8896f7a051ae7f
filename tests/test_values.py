"""Value hints: database values a question names, matched on whole words, case-insensitive."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from sqlora.data.values import MAX_HINTS, QuestionHints, ValueIndex, hint_text

SCHEMA = {
    "table_names_original": ["singer", "Home Town"],
    "column_names_original": [[-1, "*"], [0, "name"], [0, "Country"], [0, "age"], [0, "code"],
                              [1, "Town Name"]],
    "column_types": ["text", "text", "text", "number", "text", "text"],
}


@pytest.fixture
def database(tmp_path) -> Path:
    path = tmp_path / "db.sqlite"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute('CREATE TABLE singer (name TEXT, Country TEXT, age INTEGER, code TEXT)')
        connection.execute('CREATE TABLE "Home Town" ("Town Name" TEXT)')
        connection.executemany("INSERT INTO singer VALUES (?, ?, ?, ?)", [
            ("Joe Sharp", "France", 52, "1990"), ("Rose White", "United States", 41, "M"),
            ("The", "Netherlands", 30, "x"), ("O'Neil", "France", 20, "x")])
        connection.execute("""INSERT INTO "Home Town" VALUES ('Ayr')""")
        connection.commit()
    return path


def test_values_are_found_on_whole_words_whatever_their_case(database):
    index = ValueIndex(database, SCHEMA)
    assert index.mentioned("Which singers are from france?") == [("singer", "Country", "France")]
    assert index.mentioned("Singers from the united states") == [("singer", "Country", "United States")]
    assert index.mentioned("Singers from Francesca") == []  # not a whole word
    assert index.mentioned("Songs by joe sharp") == [("singer", "name", "Joe Sharp")]


def test_common_words_numbers_and_short_values_are_no_hints(database):
    index = ValueIndex(database, SCHEMA)
    # "The" is a singer's name, "1990" a code, "M" a code: none of them points at a value
    assert index.mentioned("The singers born in 1990, M or F") == []


def test_longer_phrases_come_first_and_hints_are_capped(database):
    index = ValueIndex(database, SCHEMA)
    assert index.mentioned("From Ayr, France or the Netherlands, or the United States?")[0] == \
        ("singer", "Country", "United States")
    many = " ".join(["France Netherlands Ayr United States Joe Sharp Rose White O'Neil"] * 3)  # 7 values
    assert len(index.mentioned(many)) == MAX_HINTS == 6


def test_a_value_named_twice_is_one_hint(database):
    index = ValueIndex(database, SCHEMA)
    assert index.mentioned("France, france or FRANCE?") == [("singer", "Country", "France")]


def test_only_text_values_of_text_columns_up_to_40_characters_are_looked_up(database):
    with closing(sqlite3.connect(database)) as connection:
        connection.executemany("INSERT INTO singer VALUES (?, ?, ?, ?)", [
            ("Lu", "UK", "Platinum", "2019 2020"),           # a text value in a number column
            ("A" * 36 + " Ann", "B" * 37 + " Bob", 1, "x")])  # 40 and 41 characters
        connection.commit()
    index = ValueIndex(database, SCHEMA)
    assert index.mentioned("platinum singers from the uk in the 2019 2020 season") == []
    assert index.mentioned(f"{'a' * 36} ann and {'b' * 37} bob") == [("singer", "name", "A" * 36 + " Ann")]


def test_hint_text_quotes_names_and_values(database):
    index = ValueIndex(database, SCHEMA)
    hits = index.mentioned("Is O'Neil from Ayr?")
    assert hint_text(hits) == ("\n-- values in the question:\n"
                               "singer.name = 'O''Neil'\n"
                               '"Home Town"."Town Name" = \'Ayr\'')
    assert hint_text([]) == ""


def test_question_hints_read_each_database_once_and_skip_missing_files(database, tmp_path):
    opened = []

    def database_file(db_id):
        opened.append(db_id)
        return database if db_id == "music" else tmp_path / "nowhere.sqlite"

    hints = QuestionHints(database_file, {"music": SCHEMA, "gone": SCHEMA})
    assert "France" in hints.text("music", "singers from France")
    assert hints.text("music", "singers from Ayr").endswith("'Ayr'")
    assert hints.text("gone", "singers from France") == ""
    assert opened == ["music", "gone"]
