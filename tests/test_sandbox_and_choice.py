"""Untrusted SQL: every hostile query is refused or stopped, and the database stays unchanged."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from eval_fixtures import concert_database, folder_digest, make_database

from sqlora.predict import choose
from sqlora.predict.choose import choose_candidates, first_runnable
from sqlora.sql import sandbox
from sqlora.sql.sandbox import (
    DatabaseCache,
    ReadOnlyDatabase,
    database_files,
    database_uri,
    is_network_path,
    statement_problem,
)

ROOT = Path(__file__).resolve().parents[1]
# a query that does not stop at its timeout fails its test in seconds
pytestmark = pytest.mark.timeout(20)


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
    # past the statement check (straight to the connection) it is still refused: by the
    # authorizer (VACUUM INTO needs ATTACH) and by SQLITE_LIMIT_ATTACHED = 0, each of them
    # enough alone (test_each_layer_alone_refuses)
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


def test_each_query_has_its_own_time_and_its_own_reason(database):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    assert database.run(endless, timeout=0.2).error == "timeout"
    # after a timeout, an error is reported as itself
    assert database.run("SELEC name FROM singer").error.startswith("syntax error:")
    assert database.run("SELECT nope FROM singer").error == "execution error: no such column: nope"
    # past the last query's deadline, a query of many steps runs within its own time limit
    time.sleep(0.3)
    assert database.run("SELECT count(*) FROM numbers a, numbers b WHERE a.n <= 200", timeout=30).rows == [(400_000,)]
    assert database.run(endless, timeout=0.2).error == "timeout"


def test_a_large_schema_is_read_outside_any_query_s_time(tmp_path):
    # listing 500 tables takes SQLite more steps than one call of the deadline check
    tables = "".join(f"CREATE TABLE t{i} (a{i});" for i in range(500))
    path = make_database(tmp_path / "wide.sqlite", f"BEGIN; {tables} COMMIT;")
    with ReadOnlyDatabase(path) as database:
        assert database.run("SELECT 1", timeout=0.01).rows == [(1,)]
        time.sleep(0.05)  # that query's deadline has passed: reading the schema is no query
        assert len(database.tables()) == 500
        assert database.column_names("t499") == ("a499",)


def test_endless_row_streams_stop_at_the_row_cap(database):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
    assert database.run(sql, max_rows=1000).error == "too many rows"
    cross = "SELECT * FROM numbers a, numbers b, numbers c"
    assert database.run(cross, max_rows=10).error == "too many rows"


def test_truncate_keeps_the_first_rows_of_a_longer_result(database):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
    first = database.run(endless, max_rows=3, truncate=True)
    assert first.ok and first.rows == [(1,), (2,), (3,)] and first.truncated
    whole = database.run("SELECT count(*) FROM singer", max_rows=3, truncate=True)
    assert whole.rows == [(6,)] and not whole.truncated


@pytest.mark.parametrize(
    "sql",
    ["SELECT randomblob(1e9)", "SELECT zeroblob(1000000000)", "SELECT hex(zeroblob(100000000))"],
)
def test_giant_values_are_refused(database, sql):
    # Python 3.11+ caps one value's size; 3.10 relies on the heap limit and the result-size cap
    assert database.run(sql).error in ("value too large", "out of memory", "result too large")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Connection.setlimit is Python 3.11+")
def test_one_value_is_capped_below_the_heap_limit(database):
    # 20 MB: more than the 16 MB a value may take, well under the heap limit and the result cap
    assert database.run("SELECT length(zeroblob(20000000))").error == "value too large"
    assert database.run("SELECT length(zeroblob(10000000))").rows == [(10_000_000,)]


def test_temporary_data_stays_in_memory_under_the_heap_limit(database):
    connection = database._connection
    connection.set_authorizer(lambda *_: sqlite3.SQLITE_OK)  # these pragmas are the test's, not a model's
    assert connection.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY
    assert connection.execute("PRAGMA hard_heap_limit").fetchone()[0] <= sandbox.HEAP_LIMIT_BYTES
    assert connection.execute("PRAGMA query_only").fetchone() == (1,)


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


# ---------------------------------------------------------------- the write-refusal layers, one by one


def _open_read_write(self) -> sqlite3.Connection:
    return sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)


# each layer switched off the way a careless edit would: what the guard does without it
LAYERS_OFF = {
    "read-only open": lambda patch: patch.setattr(ReadOnlyDatabase, "_open", _open_read_write),
    "query_only": lambda patch: patch.setattr(ReadOnlyDatabase, "_forbid_writes", lambda self: None),
    "statement check": lambda patch: patch.setattr(sandbox, "statement_problem", lambda sql: None),
    "authorizer": lambda patch: patch.setattr(ReadOnlyDatabase, "_authorize", lambda self, *args: sqlite3.SQLITE_OK),
    "attach limit": lambda patch: patch.setattr(sandbox, "MAX_ATTACHED", 10),
}
# statements that would change the database file
FILE_WRITES = [
    "DELETE FROM singer",
    "INSERT INTO singer (name) VALUES ('x')",
    "UPDATE singer SET age = 0",
    "DROP TABLE singer",
    "CREATE TABLE evil (x)",
    "PRAGMA user_version = 7",
    "VACUUM",
    "WITH x AS (SELECT 1) DELETE FROM singer",
]
# statements that would create another file ({folder}: the test's folder)
NEW_FILES = ["ATTACH DATABASE '{folder}/new.db' AS other", "VACUUM INTO '{folder}/copy.db'"]
# what each layer refuses when it is the only one left
REFUSED_ALONE = {
    "read-only open": FILE_WRITES,
    "query_only": FILE_WRITES,
    "statement check": [sql for sql in FILE_WRITES if not sql.startswith("WITH")] + NEW_FILES,
    "authorizer": FILE_WRITES + NEW_FILES,
    "attach limit": NEW_FILES + ["VACUUM"],
}


def _refused_without_change(db_dir: Path, folder: Path, sql: str) -> tuple[str | None, bool]:
    """(the guard's reason, whether every file under folder is unchanged and none was added)."""
    before = folder_digest(folder)
    with ReadOnlyDatabase(db_dir / "concert" / "concert.sqlite") as database:
        outcome = database.run(sql.format(folder=folder))
    return outcome.error, folder_digest(folder) == before


@pytest.mark.parametrize(
    ("layer", "sql"), [(layer, sql) for layer, statements in REFUSED_ALONE.items() for sql in statements]
)
def test_each_layer_alone_refuses(tmp_path, monkeypatch, layer, sql):
    """Every other layer off: this one still refuses (so removing it is noticed)."""
    db_dir = tmp_path / "db"
    concert_database(db_dir)
    for other, switch_off in LAYERS_OFF.items():
        if other != layer:
            switch_off(monkeypatch)
    error, unchanged = _refused_without_change(db_dir, tmp_path, sql)
    assert error is not None, f"{layer} alone let {sql!r} run"
    assert unchanged


def test_with_every_layer_off_the_writes_happen(tmp_path, monkeypatch):
    """The check of the test above: without any layer these statements do change files."""
    db_dir = tmp_path / "db"
    concert_database(db_dir)
    for switch_off in LAYERS_OFF.values():
        switch_off(monkeypatch)
    for sql in ["DELETE FROM singer", *NEW_FILES]:
        error, unchanged = _refused_without_change(db_dir, tmp_path, sql)
        assert error is None and not unchanged, sql


@pytest.mark.parametrize("layer", list(LAYERS_OFF))
def test_without_any_one_layer_the_others_still_refuse(tmp_path, monkeypatch, layer):
    db_dir = tmp_path / "db"
    concert_database(db_dir)
    LAYERS_OFF[layer](monkeypatch)
    for sql in FILE_WRITES + NEW_FILES:
        error, unchanged = _refused_without_change(db_dir, tmp_path, sql)
        assert error is not None and unchanged, f"without the {layer}: {sql!r}"


# ---------------------------------------------------------------- network paths (Windows shares)


def test_the_uri_of_a_network_path_has_no_host():
    share = PureWindowsPath(r"\\server\share\spider\concert\concert.sqlite")
    assert share.as_uri() == "file://server/share/spider/concert/concert.sqlite"  # a host: SQLite refuses it
    assert database_uri(share) == "file:////server/share/spider/concert/concert.sqlite?mode=ro&immutable=1"
    assert database_uri(PureWindowsPath("//server/share/x.sqlite")) == "file:////server/share/x.sqlite?mode=ro&immutable=1"
    assert database_uri(PureWindowsPath(r"C:\data\my db.sqlite")) == "file:///C:/data/my%20db.sqlite?mode=ro&immutable=1"
    assert database_uri(PurePosixPath("/data/a#b.sqlite")) == "file:///data/a%23b.sqlite?mode=ro&immutable=1"
    assert is_network_path(share) and is_network_path(PureWindowsPath("//server/share/x.sqlite"))
    assert not is_network_path(PureWindowsPath(r"C:\data\x.sqlite"))
    assert not is_network_path(PurePosixPath("//server/share/x.sqlite"))  # POSIX: a local path


def test_sqlite_refuses_a_uri_with_a_host(db_dir):
    path = (db_dir / "concert" / "concert.sqlite").resolve()
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"file://server{path.as_posix()}?mode=ro&immutable=1", uri=True)


def _as_a_refused_network_path(monkeypatch) -> None:
    """Make every path look like a share whose URI SQLite refuses (file://server/...)."""
    monkeypatch.setattr(sandbox, "is_network_path", lambda path: True)
    monkeypatch.setattr(sandbox, "database_uri", lambda path: f"file://server{Path(path).as_posix()}?mode=ro")


def test_a_network_path_refused_as_uri_opens_by_name_with_the_other_layers(db_dir, tmp_path, monkeypatch):
    _as_a_refused_network_path(monkeypatch)
    before = folder_digest(tmp_path)
    with ReadOnlyDatabase(db_dir / "concert" / "concert.sqlite") as database:
        assert database.plain_open
        assert database.run("SELECT name FROM singer WHERE age > 50").rows == [("Joe Sharp",)]
        for sql in FILE_WRITES + NEW_FILES:
            assert database.run(sql.format(folder=tmp_path)).error is not None, sql
    # with the statement check and the authorizer off too, query_only and the attach limit hold
    LAYERS_OFF["statement check"](monkeypatch)
    LAYERS_OFF["authorizer"](monkeypatch)
    with ReadOnlyDatabase(db_dir / "concert" / "concert.sqlite") as database:
        assert database.plain_open
        for sql in FILE_WRITES + NEW_FILES:
            assert database.run(sql.format(folder=tmp_path)).error is not None, sql
    assert folder_digest(tmp_path) == before


def test_the_plain_open_creates_no_missing_file(db_dir, monkeypatch):
    _as_a_refused_network_path(monkeypatch)
    missing = db_dir / "concert" / "missing.sqlite"
    with pytest.raises(sqlite3.OperationalError):
        ReadOnlyDatabase(missing)
    assert not missing.exists()


def test_a_local_path_refused_as_uri_is_an_error_not_a_plain_open(db_dir, monkeypatch):
    monkeypatch.setattr(sandbox, "database_uri", lambda path: f"file://server{Path(path).as_posix()}?mode=ro")
    with pytest.raises(sqlite3.OperationalError):
        ReadOnlyDatabase(db_dir / "concert" / "concert.sqlite")


def test_a_local_path_opens_read_only_through_its_uri(database):
    assert not database.plain_open
    assert database.run("SELECT count(*) FROM singer").rows == [(6,)]


# ---------------------------------------------------------------- connections, files, candidates


def test_connection_cache_closes_the_least_recently_used(tmp_path):
    paths = [make_database(tmp_path / f"d{i}.sqlite", "CREATE TABLE t (x)") for i in range(3)]
    with DatabaseCache(max_open=2) as databases:
        first = databases.get(paths[0])
        databases.get(paths[1])
        assert databases.get(paths[0]) is first
        second = databases.get(paths[1])
        databases.get(paths[0])
        databases.get(paths[2])  # closes paths[1], the least recently used
        assert databases.get(paths[0]) is first
        assert databases.get(paths[2]).run("SELECT count(*) FROM t").rows == [(0,)]
        assert databases.get(paths[1]) is not second  # reopened
    with pytest.raises(sqlite3.ProgrammingError):  # closed with the cache
        first._connection.execute("SELECT 1")


def test_database_files_main_file_first_then_the_test_suite(tmp_path):
    db_dir = tmp_path / "db"
    for name in ("concert.sqlite", "a_variant.sqlite", "z_variant.sqlite"):
        make_database(db_dir / "concert" / name, "CREATE TABLE t (x)")
    (db_dir / "concert" / "notes.txt").write_text("not a database", encoding="utf-8")
    (db_dir / "concert" / "dir.sqlite").mkdir()
    folder = db_dir / "concert"
    assert database_files(db_dir, "concert") == [
        folder / "concert.sqlite", folder / "a_variant.sqlite", folder / "z_variant.sqlite"]
    assert database_files(str(db_dir), "ghost") == []
    make_database(db_dir / "only_variants" / "v1.sqlite", "CREATE TABLE t (x)")
    assert database_files(db_dir, "only_variants") == [db_dir / "only_variants" / "v1.sqlite"]


def test_choose_candidates_runs_sql_on_each_question_s_main_database(db_dir):
    make_database(db_dir / "pets" / "pets.sqlite", "CREATE TABLE pet (id INTEGER, kind TEXT);")
    before = folder_digest(db_dir)
    questions = [{"db_id": "concert"}, {"db_id": "pets"}, {"db_id": "ghost"}, {"db_id": "concert"}]
    candidates = [
        ["SELECT nope FROM singer", "SELECT name FROM singer"],
        ["SELECT name FROM singer", "SELECT count(*) FROM pet"],
        ["SELECT nope", "SELECT 1"],  # database missing: the best
        ["DROP TABLE singer", "SELECT 1"],
    ]
    assert choose_candidates(questions, candidates, db_dir) == [1, 1, 0, 1]
    assert choose_candidates(questions, candidates, db_dir, rule=lambda sqls, database: len(sqls) - 1) == [1, 1, 0, 1]
    # extract turns each candidate into the SQL that runs
    wrapped = [[f"```sql\n{sql}\n```" for sql in texts] for texts in candidates]
    assert choose_candidates(questions, wrapped, db_dir, extract=lambda text: text.strip("`\nsql")) == [1, 1, 0, 1]
    assert choose_candidates(questions, [[c[0]] for c in candidates], db_dir / "nowhere") == [0, 0, 0, 0]
    assert folder_digest(db_dir) == before


def test_the_guard_does_not_import_the_metric():
    """The sandbox (and what it imports) is the safety guard, for prediction too: no evaluator,
    hardness, plug-value or prompt code comes with it."""
    code = "import sys, sqlora.sql.sandbox; print(sorted(m for m in sys.modules if m.startswith('sqlora.')))"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['sqlora.sql', 'sqlora.sql.sandbox', 'sqlora.sql.tokens']"


# ---------------------------------------------------------------- repairing a column taken from the wrong table

JOINED = """
CREATE TABLE stadium (stadium_id INTEGER, name TEXT, Capacity INTEGER);
CREATE TABLE concert (concert_id INTEGER, stadium_id INTEGER, year INTEGER);
CREATE TABLE arena (arena_id INTEGER, capacity INTEGER);
INSERT INTO stadium VALUES (1, 'Hampden', 52000), (2, 'Glebe', 4000);
INSERT INTO concert VALUES (10, 1, 2014), (11, 2, 2015);
INSERT INTO arena VALUES (5, 900);
"""
ON = "ON T1.stadium_id = T2.stadium_id"


@pytest.fixture
def joined(tmp_path):
    path = make_database(tmp_path / "joined.sqlite", JOINED)
    before = folder_digest(tmp_path)
    with ReadOnlyDatabase(path) as database:
        yield database
    assert folder_digest(tmp_path) == before


def repaired(sql, database):
    return choose.repair_names(sql, database.run(sql), database)


def test_columns_of_a_table(joined):
    assert joined.columns("stadium") == {"stadium_id", "name", "capacity"}
    assert joined.columns("STADIUM") == {"stadium_id", "name", "capacity"}
    assert joined.columns("nowhere") == frozenset()
    assert joined.columns('x"; DROP TABLE stadium; --') == frozenset()


@pytest.mark.parametrize("sql, fixed", [
    (f"SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 {ON} ORDER BY T1.capacity DESC LIMIT 1",
     f"SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 {ON} ORDER BY T2.capacity DESC LIMIT 1"),
    # two columns from the wrong table, fixed one after the other; the alias's spelling is kept
    (f"SELECT t1.name , T1.Capacity FROM concert AS T1 JOIN stadium AS T2 {ON}",
     f"SELECT T2.name , T2.Capacity FROM concert AS T1 JOIN stadium AS T2 {ON}"),
    # an alias without AS, and a table named by itself
    (f"SELECT T1.name FROM concert T1 JOIN stadium T2 {ON}", f"SELECT T2.name FROM concert T1 JOIN stadium T2 {ON}"),
    ("SELECT concert.name FROM concert JOIN stadium ON concert.stadium_id = stadium.stadium_id",
     "SELECT stadium.name FROM concert JOIN stadium ON concert.stadium_id = stadium.stadium_id"),
])
def test_a_column_is_taken_from_the_one_table_that_has_it(joined, sql, fixed):
    assert repaired(sql, joined) == fixed


@pytest.mark.parametrize("sql", [
    f"SELECT T1.nope FROM concert AS T1 JOIN stadium AS T2 {ON}",                   # no table has it
    # two other tables have the column (and either choice would return rows)
    f"SELECT T1.capacity FROM concert AS T1 JOIN stadium AS T2 {ON} JOIN arena AS T3 ON T3.arena_id < T1.concert_id",
    # T1 stands for two tables: which one was meant cannot be told
    f"SELECT T1.name FROM concert AS T1 JOIN stadium AS T2 {ON} WHERE T1.year IN (SELECT T1.year FROM concert AS T1)"
    " AND T1.capacity > 0 UNION SELECT name FROM arena AS T1",
    f"SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 {ON} WHERE T1.name = 'nobody'",  # fixed, but no rows
    "SELECT name FROM concert",                                                    # not qualified
    f"SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 {ON}",                   # runs as it is
    "SELECT T1.name FROM",                                                         # syntax error
    # a wrong join key: pointing T1.capacity at T2 would join every row with every row
    "SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 ON T2.Capacity = T1.capacity",
    "SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 ON T1.capacity = T2.capacity",
])
def test_nothing_is_guessed(joined, sql):
    assert repaired(sql, joined) is None


# ---------------------------------------------------------------- repairing a misspelt table or column

MISSPELT = """
CREATE TABLE Pets (PetID INTEGER, PetType TEXT, weight REAL);
CREATE TABLE cars_data (Id INTEGER, Horsepower INTEGER);
CREATE TABLE car_names (MakeId INTEGER, Model TEXT);
CREATE TABLE twins (home_town TEXT, hometown TEXT);
CREATE TABLE country (Code TEXT, Name TEXT);
CREATE TABLE city (Name TEXT, CountryCode TEXT);
INSERT INTO country VALUES ('NOR', 'Norway');
INSERT INTO city VALUES ('Oslo', 'NOR');
INSERT INTO Pets VALUES (1, 'cat', 3.5), (2, 'dog', 12.0);
INSERT INTO cars_data VALUES (1, 130), (2, 90);
INSERT INTO car_names VALUES (1, 'chevelle'), (2, 'skylark');
INSERT INTO twins VALUES ('Oslo', 'Oslo');
"""


@pytest.fixture
def misspelt(tmp_path):
    path = make_database(tmp_path / "misspelt.sqlite", MISSPELT)
    with ReadOnlyDatabase(path) as database:
        yield database


@pytest.mark.parametrize("name, options, expected", [
    ("pet_type", ["PetID", "PetType", "weight"], "PetType"),                # case and underscores
    ("singers", ["singer", "concert"], "singer"),                           # a plural
    ("area", ["Name", "SurfaceArea", "Region"], "SurfaceArea"),            # one contains the other
    ("cars", ["cars_data", "car_names", "model_list"], "cars_data"),
    ("destinationairport", ["SourceAirport", "DestAirport"], "DestAirport"),  # most letters in common
    ("xyz", ["PetID", "PetType"], None),                                    # nothing alike
    ("home_town_", ["home_town", "hometown"], None),                        # two alike
    ("cars", ["car", "cars_data"], "car"),                  # a plural beats a name that contains it
    ("age", ["page_numbers", "title"], None),               # under 4 letters, inside a name is not alike
    ("", ["a"], None),
])
def test_similar_name(name, options, expected):
    assert choose.similar_name(name, options) == expected


def test_tables_of_a_database(misspelt):
    assert misspelt.tables() == ("Pets", "cars_data", "car_names", "twins", "country", "city")


@pytest.mark.parametrize("sql, fixed", [
    ("SELECT pet_type FROM Pets", "SELECT PetType FROM Pets"),
    ("SELECT max(horsepower) FROM cars", "SELECT max(horsepower) FROM cars_data"),
    ("SELECT T1.pet_type FROM Pets AS T1", "SELECT T1.PetType FROM Pets AS T1"),
    # a table, then a column of it; a string that spells the name is left alone
    ("SELECT pet_type FROM pet WHERE weight > 1 AND pet_type != 'pet_type'",
     "SELECT PetType FROM Pets WHERE weight > 1 AND PetType != 'pet_type'"),
    # a column that no table of the query has, looked for in its alias's table
    ("SELECT T2.Model FROM cars_data AS T1 JOIN car_names AS T2 ON T1.Id = T2.MakeId WHERE T1.horse_power > 100",
     "SELECT T2.Model FROM cars_data AS T1 JOIN car_names AS T2 ON T1.Id = T2.MakeId WHERE T1.Horsepower > 100"),
    # a wrong join key: pointing T2.code at T1 would compare T1.code with itself; T2's own
    # CountryCode is the name it resembles
    ("SELECT T2.Name FROM country AS T1 JOIN city AS T2 ON T1.Code = T2.code WHERE T1.Name = 'Norway'",
     "SELECT T2.Name FROM country AS T1 JOIN city AS T2 ON T1.Code = T2.CountryCode WHERE T1.Name = 'Norway'"),
])
def test_a_misspelt_name_becomes_the_one_it_resembles(misspelt, sql, fixed):
    assert repaired(sql, misspelt) == fixed


@pytest.mark.parametrize("sql", [
    "SELECT xyz FROM Pets",                          # nothing resembles it
    "SELECT home_town_ FROM twins",                  # two columns resemble it equally
    "SELECT pet_type FROM Pets WHERE weight > 100",  # repaired, but no rows
    "SELECT T3.pet_type FROM Pets AS T1",            # an alias that stands for no table
])
def test_a_misspelt_name_is_not_guessed(misspelt, sql):
    assert repaired(sql, misspelt) is None


def test_choose_runnable_repairs_only_where_no_candidate_returns_rows(joined):
    fixable = f"SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 {ON} ORDER BY T1.capacity DESC LIMIT 1"
    good, empty = "SELECT name FROM stadium", "SELECT name FROM stadium WHERE 0"
    assert choose.choose_runnable([fixable, good], joined) == (1, good, False)
    assert choose.choose_runnable([empty, fixable], joined) == (1, fixable.replace("T1.capacity", "T2.capacity"), True)
    assert choose.choose_runnable([empty, fixable], joined, repair=False) == (0, empty, False)
    assert choose.choose_runnable(["SELECT xyz FROM stadium"], joined) == (0, "SELECT xyz FROM stadium", False)
    assert choose.choose_runnable([], joined) == (0, "", False)


def test_choose_runnable_runs_a_repeated_query_once(joined, monkeypatch):
    ran = []
    run = joined.run
    monkeypatch.setattr(joined, "run", lambda sql, **options: ran.append(sql) or run(sql, **options))
    broken = f"SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 {ON} WHERE T1.capacity > 9999999"
    assert choose.choose_runnable([broken, broken, broken], joined) == (0, broken, False)
    fixed = broken.replace("T1.capacity", "T2.capacity")
    assert ran == [broken, fixed]  # the same repair is not tried again either


def test_choose_sql_repairs_single_candidates_too(tmp_path):
    make_database(tmp_path / "db" / "shows" / "shows.sqlite", JOINED)
    before = folder_digest(tmp_path / "db")
    broken = f"SELECT T1.name FROM concert AS T1 JOIN stadium AS T2 {ON}"
    questions = [{"db_id": "shows"}, {"db_id": "ghost"}, {"db_id": "shows"}]
    candidates = [[f"```sql\n{broken}\n```"], [broken], ["SELECT nope FROM stadium", "SELECT 1"]]
    unwrap = lambda text: text.strip("`\nsql")  # noqa: E731
    chosen = choose.choose_sql(questions, candidates, tmp_path / "db", extract=unwrap)
    assert chosen == [(0, broken.replace("T1.name", "T2.name"), True), (0, broken, False), (1, "SELECT 1", False)]
    plain = choose.choose_sql(questions, candidates, tmp_path / "db", extract=unwrap, repair=False)
    assert [c.sql for c in plain] == [broken, broken, "SELECT 1"]
    assert folder_digest(tmp_path / "db") == before


# ---------------------------------------------------------------- joining a table the query lacks

LINKED = """
CREATE TABLE country (Code TEXT PRIMARY KEY, Name TEXT, Continent TEXT);
CREATE TABLE city (ID INTEGER, Name TEXT, CountryCode TEXT REFERENCES country(Code), Population INTEGER);
CREATE TABLE countrylanguage (CountryCode TEXT, Language TEXT, FOREIGN KEY (CountryCode) REFERENCES country);
CREATE TABLE route (src TEXT REFERENCES country(Code), dst TEXT REFERENCES country(Code), Airline TEXT);
CREATE TABLE planet (Galaxy TEXT);
CREATE TABLE visit (CityID INTEGER REFERENCES city(ID), CountryCode TEXT REFERENCES country(Code), Day TEXT);
INSERT INTO country VALUES ('NOR', 'Norway', 'Europe'), ('PER', 'Peru', 'South America');
INSERT INTO city VALUES (1, 'Oslo', 'NOR', 700000), (2, 'Lima', 'PER', 9000000);
INSERT INTO countrylanguage VALUES ('NOR', 'Norwegian'), ('PER', 'Spanish');
INSERT INTO route VALUES ('NOR', 'PER', 'KLM');
INSERT INTO planet VALUES ('Milky Way');
INSERT INTO visit VALUES (1, 'NOR', 'Monday');
"""


@pytest.fixture
def linked(tmp_path):
    path = make_database(tmp_path / "linked.sqlite", LINKED)
    with ReadOnlyDatabase(path) as database:
        yield database


def test_foreign_keys_name_the_referenced_primary_key(linked):
    assert set(linked.foreign_keys()) == {
        ("city", "CountryCode", "country", "Code"),
        ("countrylanguage", "CountryCode", "country", "Code"),  # REFERENCES country: its primary key
        ("route", "src", "country", "Code"), ("route", "dst", "country", "Code"),
        ("visit", "CityID", "city", "ID"), ("visit", "CountryCode", "country", "Code")}
    assert linked.run("PRAGMA foreign_key_list(city)").error == "refused: pragma"  # for the model, still refused


@pytest.mark.parametrize("sql, fixed", [
    ("SELECT T1.Name FROM city AS T1 WHERE T1.Continent = 'Europe'",
     "SELECT T1.Name FROM city AS T1 JOIN country AS T2 ON T1.CountryCode = T2.Code WHERE T2.Continent = 'Europe'"),
    # no aliases: the table by its name, and a name that both tables have is given its table
    ("SELECT Name FROM city WHERE Continent = 'Europe'",
     "SELECT city.Name FROM city JOIN country ON city.CountryCode = country.Code WHERE Continent = 'Europe'"),
    # the key of a reference that names no column
    ("SELECT count(DISTINCT Language) FROM country",
     "SELECT count(DISTINCT Language) FROM country JOIN countrylanguage ON country.Code = countrylanguage.CountryCode"),
    # in a subquery: joined there, before its WHERE, under the next free alias
    ("SELECT Language FROM countrylanguage WHERE CountryCode IN (SELECT T2.CountryCode FROM city AS T2 WHERE T2.Continent = 'Europe')",
     "SELECT Language FROM countrylanguage WHERE CountryCode IN (SELECT T2.CountryCode FROM city AS T2 "
     "JOIN country AS T3 ON T2.CountryCode = T3.Code WHERE T3.Continent = 'Europe')"),
    ("SELECT count(*) FROM (SELECT T1.Continent FROM city AS T1)",
     "SELECT count(*) FROM (SELECT T2.Continent FROM city AS T1 JOIN country AS T2 ON T1.CountryCode = T2.Code)"),
    # no key links countrylanguage to city: through country, the one table between them
    ("SELECT T1.Language FROM city AS T1 WHERE T1.Name = 'Oslo'",
     "SELECT T3.Language FROM city AS T1 JOIN country AS T2 ON T1.CountryCode = T2.Code "
     "JOIN countrylanguage AS T3 ON T2.Code = T3.CountryCode WHERE T1.Name = 'Oslo'"),
])
def test_a_column_of_a_table_the_query_lacks_joins_it(linked, sql, fixed):
    assert repaired(sql, linked) == fixed


@pytest.mark.parametrize("sql", [
    "SELECT Galaxy FROM city",                                         # no key links planet to city
    "SELECT T1.Name FROM country AS T1 WHERE T1.Airline = 'KLM'",      # two keys link route to country
    "SELECT T1.Name FROM city AS T1 WHERE T1.Continent = 'Atlantis'",  # joined, but no rows
    "SELECT T1.Day FROM visit AS T1 WHERE T1.Name = 'Oslo'",           # city and country: equally near
])
def test_a_join_is_not_guessed(linked, sql):
    assert repaired(sql, linked) is None


def test_a_misspelt_join_key_is_renamed_not_joined(linked):
    sql = "SELECT T2.Name FROM country AS T1 JOIN countrylanguage AS T3 ON T1.Code = T3.Code JOIN city AS T2 ON T1.Code = T2.CountryCode"
    assert repaired(sql, linked) == sql.replace("T3.Code", "T3.CountryCode")


def test_the_nearest_table_is_joined_through_the_one_between_if_need_be(tmp_path):
    path = make_database(tmp_path / "cars.sqlite", """
        CREATE TABLE model_list (ModelId INTEGER PRIMARY KEY, Model TEXT UNIQUE);
        CREATE TABLE car_names (MakeId INTEGER PRIMARY KEY, Model TEXT REFERENCES model_list(Model), Make TEXT);
        CREATE TABLE cars_data (Id INTEGER REFERENCES car_names(MakeId), Horsepower INTEGER, Cylinders INTEGER);
        INSERT INTO model_list VALUES (1, 'chevrolet');
        INSERT INTO car_names VALUES (1, 'chevrolet', 'chevrolet chevelle malibu');
        INSERT INTO cars_data VALUES (1, 130, 8);
    """)
    with ReadOnlyDatabase(path) as database:
        assert repaired("SELECT T1.Model FROM model_list AS T1 WHERE T1.Horsepower > 100", database) == (
            "SELECT T1.Model FROM model_list AS T1 JOIN car_names AS T2 ON T1.Model = T2.Model "
            "JOIN cars_data AS T3 ON T2.MakeId = T3.Id WHERE T3.Horsepower > 100")
        # Model is in car_names and model_list: car_names, one key away, is the nearer
        assert repaired("SELECT Model FROM cars_data ORDER BY Horsepower DESC LIMIT 1", database) == (
            "SELECT Model FROM cars_data JOIN car_names ON cars_data.Id = car_names.MakeId ORDER BY Horsepower DESC LIMIT 1")
        # the same without aliases: Model, in two tables now, is written with its table
        assert repaired("SELECT Model FROM model_list WHERE Cylinders = 8", database) == (
            "SELECT model_list.Model FROM model_list JOIN car_names ON model_list.Model = car_names.Model "
            "JOIN cars_data ON car_names.MakeId = cars_data.Id WHERE Cylinders = 8")
