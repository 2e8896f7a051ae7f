"""Untrusted SQL: every hostile query is refused or stopped, and the database stays unchanged."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from eval_fixtures import concert_database, folder_digest, make_database
from sqlora.sqlexec import ReadOnlyDatabase, first_runnable, statement_problem


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    concert_database(tmp_path / "db")
    return tmp_path / "db"


@pytest.fixture
def database(db_dir: Path):
    with ReadOnlyDatabase(db_dir / "concert" / "concert.sqlite") as database:
        yield database


def test_a_query_runs(database):
    outcome = database.run("SELECT name FROM singer WHERE age > 50;")
    assert outcome.ok and outcome.rows == [("Joe Sharp",)] and outcome.columns == 1


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DROP TABLE singer", "refused: write statement"),
        ("DELETE FROM singer", "refused: write statement"),
        ("UPDATE singer SET age = 0", "refused: write statement"),
        ("INSERT INTO singer (name) VALUES ('x')", "refused: write statement"),
        ("CREATE TABLE evil (x)", "refused: write statement"),
        ("VACUUM", "refused: write statement"),
        ("ATTACH DATABASE 'other.db' AS other", "refused: attach"),
        ("PRAGMA query_only = OFF", "refused: pragma"),
        ("BEGIN", "refused: not a query (BEGIN)"),
        ("SELECT 1; DROP TABLE singer", "refused: more than one statement"),
        ("SELECT 1; SELECT 2;", "refused: more than one statement"),
        # writes hidden behind an allowed first word reach the authorizer
        ("WITH x AS (SELECT 1) DELETE FROM singer", "refused: write statement"),
        ("WITH x AS (SELECT 1) INSERT INTO singer (name) SELECT 'x'", "refused: write statement"),
        ("SELECT load_extension('evil')", "refused: function load_extension"),
    ],
)
def test_hostile_statements_are_refused(db_dir, database, sql, reason):
    before = folder_digest(db_dir)
    assert database.run(sql).error == reason
    assert folder_digest(db_dir) == before


def test_vacuum_into_writes_no_file(db_dir, database, tmp_path):
    target = tmp_path / "copy.db"
    outcome = database.run(f"VACUUM INTO '{target}'")
    assert outcome.error == "refused: write statement"
    assert not target.exists()
    # the authorizer alone refuses it too (VACUUM INTO needs ATTACH)
    database._connection.set_progress_handler(None, 0)
    with pytest.raises(sqlite3.DatabaseError):
        database._connection.execute(f"VACUUM INTO '{target}'")
    assert not target.exists()


def test_trailing_semicolons_and_comments_are_one_statement():
    assert statement_problem("SELECT 1;") is None
    assert statement_problem("SELECT 1 ; -- done\n") is None
    assert statement_problem("SELECT ';' FROM t") is None
    assert statement_problem("   ") == "empty prediction"


@pytest.mark.parametrize(
    "sql",
    [
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        "SELECT count(*) FROM numbers a, numbers b, numbers c, numbers d",
    ],
)
def test_endless_queries_time_out(database, sql):
    start = time.monotonic()
    assert database.run(sql, timeout=0.3).error == "timeout"
    assert time.monotonic() - start < 2.0
    # the connection is usable afterwards
    assert database.run("SELECT count(*) FROM singer").rows == [(6,)]


def test_endless_row_streams_stop_at_the_row_cap(database):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
    assert database.run(sql, max_rows=1000).error == "too many rows"
    cross = "SELECT * FROM numbers a, numbers b, numbers c"
    assert database.run(cross, max_rows=10).error == "too many rows"


@pytest.mark.parametrize(
    "sql",
    ["SELECT randomblob(1e9)", "SELECT zeroblob(1000000000)", "SELECT hex(zeroblob(100000000))"],
)
def test_giant_values_are_refused(database, sql):
    # Python 3.11+ caps one value's size; 3.10 relies on the heap limit and the result-size cap
    assert database.run(sql).error in ("value too large", "out of memory", "result too large")


def test_huge_sorts_hit_the_heap_limit_in_memory(db_dir, database):
    # 2000 rows of 1 MB to sort: more than SQLite's heap limit, and no temporary file on disk
    sql = "SELECT n, zeroblob(1000000) FROM numbers ORDER BY random()"
    assert database.run(sql, max_rows=10).error == "out of memory"
    assert database.run("SELECT count(*) FROM singer").rows == [(6,)]


def test_result_size_is_capped(database):
    sql = "SELECT randomblob(1000000) FROM numbers"
    assert database.run(sql, max_bytes=10_000_000).error == "result too large"


def test_syntax_errors_and_long_lines(database):
    assert database.run("SELEC name FROM singer").error.startswith("syntax error:")
    assert database.run("EXPLAIN SELECT 1").error == "refused: not a query (EXPLAIN)"
    long_garbage = "SELECT " + "name + " * 30_000 + "1 FROM singer"  # about 200 KB
    assert database.run(long_garbage).error is not None
    long_literal = "SELECT '" + "a" * 200_000 + "'"
    outcome = database.run(long_literal)
    assert outcome.ok and len(outcome.rows[0][0]) == 200_000


def test_non_ascii_and_bad_utf8(tmp_path):
    path = make_database(tmp_path / "bad.sqlite", """
        CREATE TABLE t (x TEXT);
        INSERT INTO t VALUES (CAST(X'41FF42' AS TEXT)), ('Zoë 東京');
    """)
    with ReadOnlyDatabase(path) as database:
        # invalid UTF-8 loses its bad bytes, like the reference's text factory
        assert database.run("SELECT x FROM t").rows == [("AB",), ("Zoë 東京",)]
        assert database.run("SELECT x FROM t WHERE x = 'Zoë 東京'").rows == [("Zoë 東京",)]


# ---------------------------------------------------------------- execution-guided choice


@pytest.mark.parametrize(
    ("sqls", "expected"),
    [
        (["SELECT nope FROM x", "SELECT 1"], 1),
        (["SELECT name FROM singer", "SELECT 1"], 0),
        (["SELECT nope FROM x", "SELEC name FROM singer", "SELECT name FROM singer WHERE age > 50"], 2),
        (["SELECT nope FROM x", "SELECT 1", "SELECT 2"], 1),  # the first that runs, not the last
        (["SELECT nope FROM x", "SELEC 1"], 0),  # none runs: the model's best
        (["", "SELECT 1"], 1),  # an empty answer is skipped
        (["", "", "SELECT nope FROM x"], 0),
        (["", ""], 0),
        ([], 0),
        (["DROP TABLE singer", "SELECT 1"], 1),  # refused counts as not running
        (["SELECT * FROM singer a, singer b, singer c, singer d, singer e, singer f, singer g, "
          "numbers n, numbers m", "SELECT 1"], 1),  # too many rows
    ],
)
def test_first_runnable(db_dir, database, sqls, expected):
    before = folder_digest(db_dir)
    assert first_runnable(sqls, database) == expected
    assert folder_digest(db_dir) == before


def test_first_runnable_skips_a_candidate_that_times_out(database):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    start = time.monotonic()
    assert first_runnable([endless, "SELECT count(*) FROM singer"], database, timeout=0.2) == 1
    assert time.monotonic() - start < 2.0


def test_first_runnable_on_a_tiny_file(tmp_path):
    path = make_database(tmp_path / "tiny.sqlite", "CREATE TABLE x (a INTEGER);")
    with ReadOnlyDatabase(path) as database:
        assert first_runnable(["SELECT nope FROM x", "SELECT 1"], database) == 1
        assert first_runnable(["SELECT nope FROM x", "SELECT b FROM x"], database) == 0
        assert first_runnable(["", "SELECT a FROM x"], database) == 1


def test_first_runnable_prefers_a_candidate_with_rows(tmp_path):
    path = make_database(tmp_path / "tiny.sqlite", "CREATE TABLE x (a INTEGER); INSERT INTO x VALUES (1);")
    with ReadOnlyDatabase(path) as database:
        empty, rows = "SELECT a FROM x WHERE a = 2", "SELECT a FROM x WHERE a = 1"
        assert first_runnable(["SELECT nope FROM x", empty, rows], database) == 2
        # with no candidate returning rows, the first that runs
        assert first_runnable(["SELECT nope FROM x", empty, empty], database) == 1
