"""A database's schema read off its SQLite file, as an entry of Spider's tables.json.

For databases that come without a tables.json (your own, BIRD's) and for `sqlora ask`: table and
column names as the file writes them, column types in Spider's classes (text, number, time,
boolean, others), primary keys and foreign keys. The file is opened read-only and immutable
(`sql.sandbox.database_uri`): nothing is written beside it, not even a journal.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from ..core.errors import SqloraError
from ..sql.sandbox import database_uri

_TYPE_CLASSES = (("number", ("INT", "REAL", "NUM", "DEC", "FLOA", "DOUB")),
                 ("text", ("CHAR", "TEXT", "CLOB", "STRING")),
                 ("time", ("DATE", "TIME", "YEAR")), ("boolean", ("BOOL",)))


def column_type(declared: str) -> str:
    """SQLite's declared type as one of Spider's column classes."""
    upper = (declared or "").upper()
    for name, markers in _TYPE_CLASSES:
        if any(marker in upper for marker in markers):
            return name
    return "text" if not upper else "others"


def natural_name(name: str) -> str:
    """`CustomerOrders`, `customer_orders` -> `customer orders`, as tables.json's table_names."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ")
    return " ".join(spaced.lower().split())


def _quoted(name: str) -> str:
    """A table name as a PRAGMA takes it, whatever it holds (spaces, quotes)."""
    return '"' + name.replace('"', '""') + '"'


def read_schema(path: str | Path, db_id: str) -> dict:
    """The tables.json entry of one SQLite file; a file that is not SQLite, or has no tables, is
    an error that names it."""
    path = Path(path)
    if not path.is_file():
        raise SqloraError(f"{path}: no such database file")
    try:
        connection = sqlite3.connect(database_uri(path.resolve()), uri=True)
    except sqlite3.Error as error:
        raise SqloraError(f"{path}: cannot open it as a SQLite database ({error})") from None
    try:
        tables = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        entry = {"db_id": db_id, "table_names_original": tables, "table_names": [natural_name(t) for t in tables],
                 "column_names_original": [[-1, "*"]], "column_names": [[-1, "*"]], "column_types": ["text"],
                 "primary_keys": [], "foreign_keys": []}
        index: dict[tuple[str, str], int] = {}
        for t, table in enumerate(tables):
            primary = []
            for _, column, declared, _, _, pk in connection.execute(f"PRAGMA table_info({_quoted(table)})"):
                index[(table.lower(), column.lower())] = len(entry["column_names_original"])
                if pk:
                    primary.append((pk, index[(table.lower(), column.lower())]))
                entry["column_names_original"].append([t, column])
                entry["column_names"].append([t, natural_name(column)])
                entry["column_types"].append(column_type(declared))
            keys = [i for _, i in sorted(primary)]
            if keys:
                entry["primary_keys"].append(keys[0] if len(keys) == 1 else keys)
        for table in tables:
            for row in connection.execute(f"PRAGMA foreign_key_list({_quoted(table)})"):
                referenced, column, referenced_column = row[2], row[3], row[4]
                if not referenced_column:  # a reference to the referenced table's primary key
                    pk = [r[1] for r in connection.execute(f"PRAGMA table_info({_quoted(referenced)})") if r[5]]
                    referenced_column = pk[0] if len(pk) == 1 else None
                source = index.get((table.lower(), column.lower()))
                target = index.get((referenced.lower(), (referenced_column or "").lower()))
                if source is not None and target is not None and [source, target] not in entry["foreign_keys"]:
                    entry["foreign_keys"].append([source, target])
    except sqlite3.DatabaseError as error:
        raise SqloraError(f"{path}: not a SQLite database, or a damaged one ({error})") from None
    finally:
        connection.close()
    if not tables:
        raise SqloraError(f"{path}: the database has no tables")
    return entry
