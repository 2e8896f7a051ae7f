"""Database values that a question mentions, as hints in its prompt (BRIDGE-style matching).

A question says "singers from france"; the database holds 'France' in singer.Country. The hint
`singer.Country = 'France'` tells a small model both the column and the exact spelling.
Matching is on whole words, case-insensitive: every phrase of up to five words of the question is
looked up among the text values of the question's database.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..sql.sandbox import ReadOnlyDatabase
from .schema import quote

MAX_VALUES_PER_COLUMN = 5000
MAX_VALUE_CHARS = 40
MAX_PHRASE_WORDS = 5
MAX_HINTS = 6
HINTS_HEADER = "-- values in the question:"
_WORD = re.compile(r"\w+(?:['.-]\w+)*")
# words too common in questions to point at a value
_COMMON = frozenset("""a an and are as at be by did do does for from has have how in is it its list
many much name names number of on or show that the their them there these they this those to was
were what when where which who whose with yes no all any each every other""".split())


def phrase_key(text: str) -> str:
    return " ".join(word.casefold() for word in _WORD.findall(text))


class ValueIndex:
    """The distinct text values of one database, looked up by their words."""

    def __init__(self, database_file: str | Path, schema: dict):
        self.by_phrase: dict[str, list[tuple[str, str, str]]] = {}
        tables = schema["table_names_original"]
        types = schema.get("column_types") or ["text"] * len(schema["column_names_original"])
        with ReadOnlyDatabase(database_file) as database:
            for (table_index, column), column_type in zip(schema["column_names_original"], types):
                if table_index < 0 or column_type != "text":
                    continue
                table = tables[table_index]
                outcome = database.run(f"SELECT DISTINCT {quote(column)} FROM {quote(table)} "
                                       f"LIMIT {MAX_VALUES_PER_COLUMN}", timeout=5.0)
                for (value,) in outcome.rows or []:
                    self._add(table, column, value)

    def _add(self, table: str, column: str, value) -> None:
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_VALUE_CHARS:
            return
        key = phrase_key(value)
        if len(key) < 3 or key in _COMMON or key.replace(" ", "").isdigit():
            return
        self.by_phrase.setdefault(key, []).append((table, column, value))

    def mentioned(self, question: str) -> list[tuple[str, str, str]]:
        """(table, column, value) for the values the question names, longest phrases first."""
        words = [word.casefold() for word in _WORD.findall(question)]
        found: list[tuple[str, str, str]] = []
        for size in range(min(MAX_PHRASE_WORDS, len(words)), 0, -1):
            for start in range(len(words) - size + 1):
                for hit in self.by_phrase.get(" ".join(words[start:start + size]), []):
                    if hit not in found:
                        found.append(hit)
        return found[:MAX_HINTS]


def hint_text(hits: list[tuple[str, str, str]]) -> str:
    """The lines appended to a schema: `-- values in the question:` then `table.column = 'value'`."""
    if not hits:
        return ""
    lines = [f"{quote(table)}.{quote(column)} = '{value.replace(chr(39), chr(39) * 2)}'"
             for table, column, value in hits]
    return f"\n{HINTS_HEADER}\n" + "\n".join(lines)


class QuestionHints:
    """Value hints for questions on many databases; each database is read on first use."""

    def __init__(self, database_file_of, schemas: dict[str, dict]):
        self._database_file_of = database_file_of
        self._schemas = schemas
        self._indexes: dict[str, ValueIndex | None] = {}

    def text(self, db_id: str, question: str) -> str:
        """The hint lines for this question, or "" (none, or the database file is missing)."""
        if db_id not in self._indexes:
            path = Path(self._database_file_of(db_id))
            self._indexes[db_id] = ValueIndex(path, self._schemas[db_id]) if path.is_file() else None
        index = self._indexes[db_id]
        return hint_text(index.mentioned(question)) if index else ""
