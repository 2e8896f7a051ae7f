"""Prompts for questions about one SQLite database: its schema read off the file
(`sqlite_schema.read_schema`), written in the format a model was trained with (`PromptFormat`),
with the database values each question names (`values`), and fitted to the model's context.

Where the whole schema makes a prompt longer than the model takes, the prompt keeps the tables
the question points at: first those it names (a table's name, or a column name that at most
DISTINCTIVE_COLUMN_TABLES tables have) or whose values it names, then the tables a foreign key
joins to those, as many as fit, in that order. A question that points at no table keeps the
database's first tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import SqloraError
from ..core.params import SCHEMA_FORMATS
from .prompts import SYSTEM_PROMPT, build_prompt
from .schema import serialize_schema
from .sqlite_schema import natural_name, read_schema
from .values import ValueIndex, hint_text

# a column name that more tables have (id, name) does not tell which table a question means
DISTINCTIVE_COLUMN_TABLES = 3
NAMED_IN_NOTE = 8  # tables named in the line that says what was kept


@dataclass(frozen=True)
class PromptFormat:
    """How a model's training prompts were made (preprocess writes it to prompt_format.json)."""

    schema_format: str
    value_hints: bool
    system_prompt: str = SYSTEM_PROMPT

    @classmethod
    def from_record(cls, record, where: str) -> PromptFormat:
        """The format a training record holds; a malformed one is an error that names `where`."""
        if not (isinstance(record, dict) and record.get("schema_format") in SCHEMA_FORMATS
                and isinstance(record.get("value_hints"), bool)
                and isinstance(record.get("system_prompt", SYSTEM_PROMPT), str)):
            raise SqloraError(f"{where}: its prompt_format should hold schema_format ({', '.join(SCHEMA_FORMATS)}), "
                              "value_hints (true or false) and system_prompt (text)")
        return cls(record["schema_format"], record["value_hints"], record.get("system_prompt", SYSTEM_PROMPT))

    def describe(self) -> str:
        return f"{self.schema_format} schema, " + ("with value hints" if self.value_hints else "no value hints")


@dataclass
class FittedPrompt:
    messages: list[dict]
    note: str | None = None  # which tables were kept to fit the context, in one line; None: all


class DatabasePrompts:
    """Prompts for one database file; its schema and values are read once, when made."""

    def __init__(self, database: str | Path, prompt_format: PromptFormat):
        database = Path(database)
        self.format = prompt_format
        self.schema = read_schema(database, database.stem)
        self.values = ValueIndex(database, self.schema) if prompt_format.value_hints else None
        self.whole_schema = serialize_schema(self.schema, prompt_format.schema_format)

    def prompt(self, question: str, count_tokens: Callable[[list[dict]], int] | None = None,
               max_tokens: int | None = None) -> FittedPrompt:
        """The chat messages that ask `question`; with `count_tokens` and `max_tokens`, no longer
        than `max_tokens` (see the module's docstring)."""
        hits = self.values.mentioned(question) if self.values else []
        messages = build_prompt(self.whole_schema + hint_text(hits), question,
                                system_prompt=self.format.system_prompt)
        if count_tokens is None or max_tokens is None:
            return FittedPrompt(messages)
        whole = count_tokens(messages)
        if whole <= max_tokens:
            return FittedPrompt(messages)
        ranked = pointed_tables(self.schema, question, hits)
        pointed = bool(ranked)
        ranked = ranked or list(range(len(self.schema["table_names_original"])))

        def with_tables(count: int) -> list[dict]:
            kept = sorted(ranked[:count])
            names = {self.schema["table_names_original"][t].lower() for t in kept}
            text = serialize_schema(subset_schema(self.schema, kept), self.format.schema_format)
            return build_prompt(text + hint_text([hit for hit in hits if hit[0].lower() in names]), question,
                                system_prompt=self.format.system_prompt)

        low, high = 0, len(ranked)  # the most tables, in ranked order, that fit
        while low < high:
            middle = (low + high + 1) // 2
            if count_tokens(with_tables(middle)) <= max_tokens:
                low = middle
            else:
                high = middle - 1
        tables = len(self.schema["table_names_original"])
        if low == 0:
            raise SqloraError(f"the schema's {tables} tables make a prompt of {whole:,} tokens, and even its "
                              f"first table alone is longer than the {max_tokens:,} the model takes with its answer")
        kept = [self.schema["table_names_original"][t] for t in sorted(ranked[:low])]
        which = (f"the {low} the question points at (by name, value or foreign key)" if pointed
                 else f"the first {low} (the question names none of them)")
        shown = ", ".join(kept[:NAMED_IN_NOTE]) + (", ..." if len(kept) > NAMED_IN_NOTE else "")
        note = (f"schema: its {tables} tables make a prompt of {whole:,} tokens, more than the {max_tokens:,} the "
                f"model takes with its answer; kept {which}: {shown}")
        return FittedPrompt(with_tables(low), note)


def pointed_tables(schema: dict, question: str, hits: list[tuple[str, str, str]]) -> list[int]:
    """The tables a question points at, most pointed first: by name or value (a value hint),
    then the tables a foreign key joins to those, then the tables it points at only by a
    distinctive column name, then theirs. [] where it points at none."""
    tables = schema["table_names_original"]
    words = _word_forms(question)
    score = [0] * len(tables)
    for t, name in enumerate(tables):
        if _named(natural_name(name), words):
            score[t] += 3
    index = {name.lower(): t for t, name in enumerate(tables)}
    for table, _, _ in hits:
        if table.lower() in index:
            score[index[table.lower()]] += 3
    owners: dict[str, set[int]] = {}
    for t, column in schema["column_names_original"]:
        if t >= 0:
            owners.setdefault(natural_name(column), set()).add(t)
    for name, owning in owners.items():
        if len(owning) <= DISTINCTIVE_COLUMN_TABLES and _named(name, words):
            for t in owning:
                score[t] += 1
    neighbours = _joined_tables(schema)
    ranked: list[int] = []
    for strong in (True, False):
        tier = sorted((t for t in range(len(tables)) if score[t] and (score[t] >= 3) == strong),
                      key=lambda t: (-score[t], t))
        for t in tier + [n for t in tier for n in neighbours.get(t, [])]:
            if t not in ranked:
                ranked.append(t)
    return ranked


def subset_schema(schema: dict, tables: list[int]) -> dict:
    """A tables.json entry of only `tables` (indices, in the order given), its columns, keys and
    foreign keys renumbered; keys that reach a table left out are left out."""
    new_table = {old: new for new, old in enumerate(tables)}
    natural = schema.get("column_names") or schema["column_names_original"]
    types = schema.get("column_types") or ["text"] * len(schema["column_names_original"])
    entry = {"db_id": schema.get("db_id", ""),
             "table_names_original": [schema["table_names_original"][t] for t in tables],
             "table_names": [(schema.get("table_names") or schema["table_names_original"])[t] for t in tables],
             "column_names_original": [[-1, "*"]], "column_names": [[-1, "*"]], "column_types": ["text"],
             "primary_keys": [], "foreign_keys": []}
    new_column = {}
    for i, (t, column) in enumerate(schema["column_names_original"]):
        if t in new_table:
            new_column[i] = len(entry["column_names_original"])
            entry["column_names_original"].append([new_table[t], column])
            entry["column_names"].append([new_table[t], natural[i][1]])
            entry["column_types"].append(types[i])

    def renumbered(key):
        columns = key if isinstance(key, list) else [key]
        if not all(c in new_column for c in columns):
            return None
        return [new_column[c] for c in columns] if isinstance(key, list) else new_column[key]

    entry["primary_keys"] = [k for k in map(renumbered, schema.get("primary_keys", [])) if k is not None]
    for source, target in schema.get("foreign_keys", []):
        pair = renumbered(source), renumbered(target)
        if None not in pair:
            entry["foreign_keys"].append(list(pair))
    return entry


def _joined_tables(schema: dict) -> dict[int, list[int]]:
    """For each table, the tables a foreign key joins it to, in the order the keys are declared."""
    table_of = [t for t, _ in schema["column_names_original"]]
    joined: dict[int, list[int]] = {}
    for source, target in schema.get("foreign_keys", []):
        first = [source] if not isinstance(source, list) else source
        second = [target] if not isinstance(target, list) else target
        a, b = table_of[first[0]], table_of[second[0]]
        for table, other in ((a, b), (b, a)):
            if table != other and other not in joined.setdefault(table, []):
                joined[table].append(other)
    return joined


def _word_forms(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return set(words) | {_singular(word) for word in words}


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _named(natural: str, words: set[str]) -> bool:
    """Whether every word of a name (in `natural_name` form) is among a question's words."""
    parts = natural.split()
    return bool(parts) and all(part in words or _singular(part) in words for part in parts)
