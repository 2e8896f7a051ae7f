"""Run untrusted SQL (a model's prediction) against a SQLite database without harm.

Layers, each enough on its own for the case it names (tests/test_sandbox_and_choice.py switches each one
off in turn and checks that the others still refuse, and that each refuses alone):

- the file is opened read-only and immutable (``file:...?mode=ro&immutable=1``;
  ``ReadOnlyDatabase._open``): nothing can be written to it;
- ``PRAGMA query_only=ON`` (``ReadOnlyDatabase._forbid_writes``): no write to any database of the
  connection, the temporary one included;
- only one statement, and not one that SQLite knows as something other than a query (INSERT,
  DROP, ATTACH, PRAGMA, VACUUM, BEGIN, ...): those are refused before SQLite sees them
  (``statement_problem``);
- an authorizer allows reading, selecting and calling functions and denies everything else
  (writes, ATTACH, which VACUUM INTO also needs, PRAGMA, schema edits, transactions), and a few
  functions that touch files or load code (``ReadOnlyDatabase._authorize``);
- no database may be attached (``SQLITE_LIMIT_ATTACHED`` is ``MAX_ATTACHED``, 0), which also stops
  VACUUM INTO and VACUUM (Python 3.11+);
- a deadline: SQLite calls a progress handler every few thousand virtual-machine steps, which
  stops the statement once the time is up;
- memory: a cap on the size of one value (``SQLITE_LIMIT_LENGTH``, Python 3.11+), a heap limit
  for SQLite in the whole process (``PRAGMA hard_heap_limit``; it only ever lowers a limit
  already set) that also bounds sorts and temporary tables (``temp_store=MEMORY``: nothing
  spills to disk), and caps on the rows and bytes fetched, read a batch at a time.

Errors come back as short reasons (``Outcome.error``), never as exceptions.

A database on a Windows network share (``\\\\server\\share\\...``) is opened through
``file:////server/share/...``; where SQLite refuses that URI, by its plain name, with every layer
but the read-only open still in place (``is_network_path``).

``DatabaseCache`` keeps connections by file; ``database_files`` finds a question's databases.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePath

from .tokens import significant, tokenize

DEFAULT_MAX_ROWS = 100_000

DEFAULT_MAX_BYTES = 64 * 2**20

MAX_VALUE_BYTES = 16 * 2**20

MAX_SQL_BYTES = 1 * 2**20

HEAP_LIMIT_BYTES = 512 * 2**20

PAGE_CACHE_KIB = 1024

PROGRESS_STEPS = 2_000

FETCH_BATCH = 256

MAX_MESSAGE_CHARS = 200

MAX_ATTACHED = 0

WRITE_STARTS = frozenset({"insert", "update", "delete", "replace", "drop", "create", "alter", "vacuum"})

# The other statements SQLite knows; a first word it does not know is left to its syntax error.
OTHER_STARTS = frozenset(
    {"analyze", "begin", "commit", "end", "explain", "reindex", "release", "rollback", "savepoint"}
)

DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}

_ACTION_REASONS = {
    sqlite3.SQLITE_PRAGMA: "refused: pragma",
    sqlite3.SQLITE_TRANSACTION: "refused: transaction",
    getattr(sqlite3, "SQLITE_SAVEPOINT", 32): "refused: transaction",
    sqlite3.SQLITE_ATTACH: "refused: attach",
    sqlite3.SQLITE_DETACH: "refused: attach",
}

# Messages of errors that SQLite raises while compiling a statement: substituting literal values
# cannot fix them.
COMPILE_ERROR_MARKERS = (
    "syntax error",
    "no such",
    "ambiguous column",
    "misuse of",
    "wrong number of arguments",
    "unrecognized token",
    "incomplete input",
    "refused",
    "terms in the result",
    "selects to the left and right",
    "not authorized",
    "expression tree is too large",
)


@dataclass
class Outcome:
    """What running one statement gave: rows, or the reason it gave none."""

    rows: list[tuple] | None = None
    columns: int = 0
    error: str | None = None
    names: tuple[str, ...] = ()         # the result's column names
    total_rows: int | None = None       # rows the query returned, where `run(keep=...)` kept fewer
    truncated: bool = False             # rows holds the first max_rows rows of a longer result (run(truncate=True))

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def row_count(self) -> int:
        return len(self.rows or ()) if self.total_rows is None else self.total_rows


def statement_problem(sql: str) -> str | None:
    """Why sql may not run (not a single query), or None when it may.

    A trailing semicolon is fine; text after it that is more than comments or semicolons is a
    second statement.
    """
    tokens = significant(tokenize(sql))
    if not tokens:
        return "empty prediction"
    first = tokens[0].low
    first_semicolon = next((i for i, token in enumerate(tokens) if token.text == ";"), len(tokens))
    if any(token.text != ";" for token in tokens[first_semicolon + 1 :]):
        return "refused: more than one statement"
    if first in WRITE_STARTS:
        return "refused: write statement"
    if first in ("attach", "detach"):
        return "refused: attach"
    if first == "pragma":
        return "refused: pragma"
    if first in OTHER_STARTS:
        return f"refused: not a query ({tokens[0].text.upper()})"
    return None


class ReadOnlyDatabase:
    """One read-only connection to a SQLite file, for many guarded queries."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._deadline = 0.0
        self._timed_out = False
        self._denied: str | None = None
        self.plain_open = False  # True when a network path had to be opened by name
        self._columns: dict[str, tuple[str, ...]] = {}
        self._tables: tuple[str, ...] | None = None
        self._foreign_keys: tuple[tuple[str, str, str, str], ...] | None = None
        self._connection = self._open()
        # like the reference evaluator: text that is not valid UTF-8 loses the bad bytes
        self._connection.text_factory = lambda data: data.decode("utf-8", errors="ignore")
        self._forbid_writes()
        self._connection.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        # big sorts and temporary tables stay in memory, under the heap limit, not on disk
        self._connection.execute("PRAGMA temp_store = MEMORY")
        self._connection.execute(f"PRAGMA hard_heap_limit = {HEAP_LIMIT_BYTES}")
        if hasattr(self._connection, "setlimit"):  # Python 3.11+
            self._connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            self._connection.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)
            self._connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, MAX_ATTACHED)
        self._connection.set_authorizer(self._authorize)
        self._connection.set_progress_handler(self._past_deadline, PROGRESS_STEPS)

    def _open(self) -> sqlite3.Connection:
        """The file, read-only and immutable.  A network path whose URI SQLite refuses is opened by
        its name (read-write as far as SQLite knows; query_only, the authorizer, the statement
        check and the attach limit still refuse every write)."""
        path = self.path.resolve()
        try:
            return sqlite3.connect(database_uri(path), uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError:
            if not is_network_path(path):
                raise
        if not path.is_file():  # opened by name, a missing file would be created
            raise sqlite3.OperationalError(f"unable to open database file: {path}")
        self.plain_open = True
        return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)

    def _forbid_writes(self) -> None:
        self._connection.execute("PRAGMA query_only = ON")

    def close(self) -> None:
        self._connection.close()

    def columns(self, table: str) -> frozenset[str]:
        """The lower-cased column names of a table (none for a name that is no table here)."""
        return frozenset(name.lower() for name in self.column_names(table))

    def column_names(self, table: str) -> tuple[str, ...]:
        """The column names of a table as its schema writes them (none for a name that is no table here)."""
        if table not in self._columns:
            names: tuple[str, ...] = ()
            if re.fullmatch(r"\w+", table):
                try:
                    cursor = self._connection.execute(f'SELECT * FROM "{table}" LIMIT 0')
                    names = tuple(d[0] for d in cursor.description or ())
                    cursor.close()
                except sqlite3.Error:
                    pass
            self._columns[table] = names
        return self._columns[table]

    def tables(self) -> tuple[str, ...]:
        """The names of the database's tables, as written in its schema."""
        if self._tables is None:
            try:
                rows = self._connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            except sqlite3.Error:
                rows = []
            self._tables = tuple(name for (name,) in rows if not name.lower().startswith("sqlite_"))
        return self._tables

    def foreign_keys(self) -> tuple[tuple[str, str, str, str], ...]:
        """(table, column, referenced table, referenced column) for each foreign key the schema
        declares, as written there; a reference that names no column stands for the referenced
        table's primary key."""
        if self._foreign_keys is None:
            keys = []
            # these pragmas are ours, not a model's (None, which turns the authorizer off, needs Python 3.11)
            self._connection.set_authorizer(lambda *_: sqlite3.SQLITE_OK)
            try:
                for table in self.tables():
                    if not re.fullmatch(r"\w+", table):
                        continue
                    for row in self._connection.execute(f'PRAGMA foreign_key_list("{table}")').fetchall():
                        referenced, column, referenced_column = row[2], row[3], row[4]
                        if not referenced_column and re.fullmatch(r"\w+", referenced):
                            primary = [r[1] for r in self._connection.execute(f'PRAGMA table_info("{referenced}")')
                                       if r[5]]
                            referenced_column = primary[0] if len(primary) == 1 else None
                        if referenced_column:
                            keys.append((table, column, referenced, referenced_column))
            except sqlite3.Error:
                pass
            finally:
                self._connection.set_authorizer(self._authorize)
            self._foreign_keys = tuple(keys)
        return self._foreign_keys

    def __enter__(self) -> ReadOnlyDatabase:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def run(
        self,
        sql: str,
        *,
        timeout: float = 5.0,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        expected_columns: int | None = None,
        keep: int | None = None,
        truncate: bool = False,
    ) -> Outcome:
        """Run one query within the limits.

        More than max_rows rows gives the error "too many rows", or with truncate the first
        max_rows rows and ``truncated``; expected_columns, when given,
        stops a query with another number of result columns before it fetches anything (error
        "wrong number of columns"). With `keep`, only the first `keep` rows are kept and the
        others are counted (`Outcome.total_rows`) instead of refused: the timeout bounds them.
        """
        problem = statement_problem(sql)
        if problem is not None:
            return Outcome(error=problem)
        self._timed_out = False
        self._denied = None
        self._deadline = time.monotonic() + timeout
        cursor = None
        try:
            cursor = self._connection.execute(sql)
            names = tuple(d[0] for d in cursor.description or ())
            columns = len(names)
            if expected_columns is not None and columns != expected_columns:
                return Outcome(columns=columns, error="wrong number of columns", names=names)
            rows: list[tuple] = []
            size = total = 0
            while True:
                batch = cursor.fetchmany(FETCH_BATCH)
                if not batch:
                    break
                total += len(batch)
                if keep is not None:
                    batch = batch[: max(0, keep - len(rows))]
                elif total > max_rows:
                    if truncate:
                        rows.extend(batch[: max_rows - len(rows)])
                        return Outcome(rows=rows, columns=columns, names=names, truncated=True)
                    return Outcome(columns=columns, error="too many rows", names=names)
                rows.extend(batch)
                size += sum(_cell_size(value) for row in batch for value in row)
                if size > max_bytes:
                    return Outcome(columns=columns, error="result too large", names=names)
            return Outcome(rows=rows, columns=columns, names=names, total_rows=total if keep is not None else None)
        except (sqlite3.Error, sqlite3.Warning) as error:
            return Outcome(error=self._reason(error))
        except MemoryError:
            return Outcome(error="out of memory")
        except (ValueError, OverflowError, UnicodeError) as error:
            return Outcome(error=f"execution error: {_shorten(str(error))}")
        finally:
            self._deadline = 0.0
            if cursor is not None:
                cursor.close()

    def _past_deadline(self) -> int:
        if self._deadline and time.monotonic() > self._deadline:
            self._timed_out = True
            return 1
        return 0

    def _authorize(self, action: int, argument1, argument2, database, trigger) -> int:
        if action == sqlite3.SQLITE_FUNCTION and (argument2 or "").lower() in DENIED_FUNCTIONS:
            self._denied = f"refused: function {argument2}"
            return sqlite3.SQLITE_DENY
        if action in _ALLOWED_ACTIONS:
            return sqlite3.SQLITE_OK
        self._denied = _ACTION_REASONS.get(action, "refused: write statement")
        return sqlite3.SQLITE_DENY

    def _reason(self, error: Exception) -> str:
        message = str(error)
        lowered = message.lower()
        if self._timed_out:
            return "timeout"
        if self._denied is not None:
            return self._denied
        if "one statement at a time" in lowered:
            return "refused: more than one statement"
        if "syntax error" in lowered or "unrecognized token" in lowered or "incomplete input" in lowered:
            return f"syntax error: {_shorten(message)}"
        if "too big" in lowered:
            return "value too large"
        if "out of memory" in lowered:
            return "out of memory"
        if "readonly" in lowered or "read-only" in lowered:
            return "refused: write statement"
        return f"execution error: {_shorten(message)}"


def database_uri(path: str | PurePath, *, immutable: bool = True) -> str:
    """The read-only, immutable ``file:`` URI of an absolute path (`immutable` False: read-only
    only, so that SQLite takes its locks).

    ``Path.as_uri()`` writes a Windows network path ``\\\\server\\share\\x.sqlite`` as
    ``file://server/share/x.sqlite``, a URI with a host, which SQLite refuses; with an empty host
    and the whole UNC path (``file:////server/share/x.sqlite``) it is a path again.
    """
    path = path if isinstance(path, PurePath) else Path(path)
    uri = path.as_uri()
    if is_network_path(path):
        uri = "file:////" + uri[len("file://") :]
    return uri + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


def is_network_path(path: PurePath) -> bool:
    """True for a Windows network path (UNC: ``\\\\server\\share\\...``)."""
    return path.drive[:2] in ("\\\\", "//")


SQLITE_HEADER = b"SQLite format 3\x00"

LOCK_WAIT_S = 1.0


def is_wal_database(path: str | Path) -> bool:
    """True for a SQLite file in WAL mode (its header's read and write versions are 2)."""
    with open(path, "rb") as file:
        header = file.read(20)
    return header.startswith(SQLITE_HEADER) and header[18:20] == b"\x02\x02"


def lock_problem(path: str | Path) -> str | None:
    """Why a database cannot be read as committed just now, or None.

    An immutable connection takes no locks: it would read a file halfway through another
    program's write. So a database in rollback-journal mode is read once through a plain read-only
    connection, which waits LOCK_WAIT_S for a shared lock: a writer that holds the database
    locked longer, or a hot journal that a cut-off write left beside it (only a connection that
    may write can roll it back), is a problem. That connection creates no file and writes
    nothing. A WAL database is not probed: writers never block its readers, and a read-only
    connection would create its -wal and -shm files.
    """
    path = Path(path)
    try:
        if not path.is_file() or is_wal_database(path):
            return None
        connection = sqlite3.connect(database_uri(path.resolve(), immutable=False), uri=True, timeout=LOCK_WAIT_S)
    except (OSError, sqlite3.Error):
        return None  # unreadable: reading the schema says why
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as error:
        message = str(error).lower()
        if "locked" in message or "busy" in message:
            return "another program holds it locked while writing to it; try again when it is done"
        if "readonly" in message or "read-only" in message:
            return (f"a write to it was cut off and left {path.name}-journal beside it; open the database once "
                    "with the program that wrote it, or the sqlite3 shell, to roll that write back")
    except sqlite3.Error:
        pass  # not a database, or a damaged one: reading the schema says so
    finally:
        connection.close()
    return None


def unread_wal(path: str | Path) -> bool:
    """True for a WAL database with a non-empty -wal file beside it: committed changes that are
    not in the database file yet may be there, and an immutable connection does not read them."""
    path = Path(path)
    wal = path.with_name(path.name + "-wal")
    return is_wal_database(path) and wal.is_file() and wal.stat().st_size > 0


def is_compile_error(reason: str | None) -> bool:
    """True for reasons that come from the statement's text, not from running it."""
    return reason is not None and any(marker in reason.lower() for marker in COMPILE_ERROR_MARKERS)


def _cell_size(value) -> int:
    if isinstance(value, (str, bytes)):
        return len(value) + 16
    return 16


def _shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DatabaseCache:
    """Read-only connections by file, opened on first use; the least recently used are closed
    beyond max_open (a test suite can have thousands of database files)."""

    def __init__(self, max_open: int = 64) -> None:
        self.max_open = max_open
        self._open: OrderedDict[Path, ReadOnlyDatabase] = OrderedDict()

    def get(self, path: Path) -> ReadOnlyDatabase:
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        while len(self._open) >= self.max_open:
            _, oldest = self._open.popitem(last=False)
            oldest.close()
        self._open[path] = ReadOnlyDatabase(path)
        return self._open[path]

    def close(self) -> None:
        for database in self._open.values():
            database.close()
        self._open.clear()

    def __enter__(self) -> DatabaseCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def database_files(db_dir: str | Path, db_id: str) -> list[Path]:
    """DBDIR/<db_id>/<db_id>.sqlite first, then the folder's other .sqlite files (test suites)."""
    folder = Path(db_dir) / db_id
    if not folder.is_dir():
        return []
    main_file = folder / f"{db_id}.sqlite"
    others = sorted(path for path in folder.glob("*.sqlite") if path != main_file and path.is_file())
    return ([main_file] if main_file.is_file() else []) + others
