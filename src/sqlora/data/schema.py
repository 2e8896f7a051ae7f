"""Database schemas from Spider's tables.json, written out as text for a prompt.

Original names (table_names_original, column_names_original) are used: the SQL refers to them.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..core.errors import SqloraError
from ..core.params import SCHEMA_FORMATS as FORMATS
from ..core.params import SMALL_MODEL_PARAMETERS
from .spider import read_json

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# SQLite's keywords that it does not take as a bare table or column name (SQLite 3.40: each one
# tried in CREATE TABLE, SELECT, WHERE, ORDER BY and a join)
RESERVED = frozenset("""add all alter and as autoincrement between case cast check collate commit constraint
create default deferrable delete distinct drop else escape except exists foreign from group having in index
insert intersect into is isnull join limit not nothing notnull null on or order primary raise references
returning select set table then to transaction union unique update using values when where""".split())


def load_schemas(tables_json: str | Path) -> dict[str, dict]:
    """tables.json as {db_id: entry}."""
    entries = read_json(Path(tables_json))
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "db_id" in e for e in entries):
        raise SqloraError(f"{tables_json}: expected a list of databases with a db_id each")
    return {entry["db_id"]: entry for entry in entries}


def serialize_schema(db: dict, fmt: str) -> str:
    """One tables.json entry as text: "compact" (default), "ddl" or "names"."""
    if fmt not in FORMATS:
        raise ValueError(f"schema format {fmt!r}: allowed values are {', '.join(FORMATS)}")
    tables = _Tables(db)
    if fmt == "names":
        return "\n".join(f"{t}: {', '.join(cols)}" for t, cols in tables.columns_by_table())
    if fmt == "compact":
        return _compact(tables)
    return _ddl(tables)


def schema_format_for(parameters: int) -> str:
    """What `data.schema_format: auto` gives a model of this many parameters: CREATE TABLE
    statements above SMALL_MODEL_PARAMETERS, the compact format below, where the longer prompts
    cost a small model time and memory for no measured gain."""
    return "compact" if parameters <= SMALL_MODEL_PARAMETERS else "ddl"


def quote(name: str) -> str:
    """Name as SQL needs it: bare when plain, else in double quotes ("Home Town", "order")."""
    if _PLAIN_NAME.fullmatch(name) and name.lower() not in RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


class _Tables:
    """The parts of a tables.json entry, indexed by column number (column 0 is '*')."""

    def __init__(self, db: dict):
        self.tables = [quote(t) for t in db["table_names_original"]]
        self.columns = [(t, quote(c)) for t, c in db["column_names_original"]]
        self.types = list(db.get("column_types") or ["text"] * len(self.columns))
        self.primary = set(_flatten(db.get("primary_keys", [])))
        self.foreign = [
            pair for col, ref in db.get("foreign_keys", [])
            for pair in zip(_flatten([col]), _flatten([ref]))
        ]

    def column_ids(self, table: int) -> list[int]:
        return [i for i, (t, _) in enumerate(self.columns) if t == table]

    def columns_by_table(self) -> list[tuple[str, list[str]]]:
        return [(name, [self.columns[i][1] for i in self.column_ids(t)])
                for t, name in enumerate(self.tables)]

    def qualified(self, column: int) -> str:
        table, name = self.columns[column]
        return f"{self.tables[table]}.{name}"


def _flatten(keys: list) -> list[int]:
    """Primary/foreign keys are ints, or lists of ints for composite keys in newer tables.json."""
    out: list[int] = []
    for key in keys:
        out.extend(key if isinstance(key, list) else [key])
    return out


def _compact(tables: _Tables) -> str:
    """`table(id*, name, ...)` per table, `*` marking primary key columns, then joinable columns."""
    lines = []
    for t, name in enumerate(tables.tables):
        cols = [tables.columns[i][1] + ("*" if i in tables.primary else "") for i in tables.column_ids(t)]
        lines.append(f"{name}({', '.join(cols)})")
    if tables.foreign:
        lines.append("-- foreign keys:")
        lines += [f"{tables.qualified(col)} = {tables.qualified(ref)}" for col, ref in tables.foreign]
    return "\n".join(lines)


def _ddl(tables: _Tables) -> str:
    statements = []
    for t, name in enumerate(tables.tables):
        ids = tables.column_ids(t)
        parts = [f"{tables.columns[i][1]} {tables.types[i]}" for i in ids]
        keys = [tables.columns[i][1] for i in ids if i in tables.primary]
        if keys:
            parts.append(f"PRIMARY KEY ({', '.join(keys)})")
        for col, ref in tables.foreign:
            if tables.columns[col][0] == t:
                ref_table, ref_name = tables.columns[ref]
                parts.append(f"FOREIGN KEY ({tables.columns[col][1]}) "
                             f"REFERENCES {tables.tables[ref_table]}({ref_name})")
        statements.append(f"CREATE TABLE {name} ({', '.join(parts)});")
    return "\n".join(statements)
