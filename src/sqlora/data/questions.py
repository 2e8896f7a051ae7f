"""Question files of your own data or of BIRD's: .jsonl, .csv or .json, each row checked.

Every row needs the `question`, its SQL (`query`; BIRD's files call it `SQL`) and the `db_id` of
its database; `evidence` (BIRD's hint that explains the question's terms) is kept where present,
and so are BIRD's `difficulty` and `question_id`. A malformed row is an error that names the
file and the line the row starts on. Each question keeps where it came from (`origin`,
`train.jsonl:12`), so that later stages can name it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import SqloraError

SUFFIXES = (".jsonl", ".csv", ".json")
REQUIRED = ("question", "query", "db_id")
QUERY_KEYS = ("query", "SQL", "sql")
OPTIONAL_TEXT = ("evidence", "difficulty")
# a db_id names a folder and a file: no separators, no climbing out
_DB_ID = re.compile(r"[^/\\:*?\"<>|\x00-\x1f]+")


def read_questions(path: str | Path) -> list[dict]:
    """The questions of one file, each {db_id, question, query, origin} and evidence,
    difficulty, question_id where the row has them."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SqloraError(f"{path}: question files are .jsonl, .csv or .json")
    rows = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".json": _json_rows}[suffix](path)
    return [question_row(row, path, line) for line, row in rows]


def question_row(row, path: Path, line: int) -> dict:
    """One row checked and normalized; a malformed one raises, naming the file and line."""
    where = f"{path} line {line}"
    if not isinstance(row, dict):
        raise SqloraError(f"{where}: expected an object with {', '.join(REQUIRED)}, got {type(row).__name__}")
    query_key = next((key for key in QUERY_KEYS if key in row), "query")
    values = {"question": row.get("question"), "query": row.get(query_key), "db_id": row.get("db_id")}
    missing = [key for key, value in values.items() if value is None or value == ""]
    if missing:
        raise SqloraError(f"{where}: no {', '.join(missing)} (each row needs {', '.join(REQUIRED)})")
    for key, value in values.items():
        if not isinstance(value, str):
            raise SqloraError(f"{where}: {key} must be text, got {value!r}")
        if not value.strip():
            raise SqloraError(f"{where}: {key} is blank")
    db_id = values["db_id"].strip()
    if not _DB_ID.fullmatch(db_id) or db_id in (".", ".."):
        raise SqloraError(f"{where}: db_id {db_id!r} cannot name a database file")
    question = {"db_id": db_id, "question": values["question"].strip(), "query": values["query"].strip()}
    for key in OPTIONAL_TEXT:
        value = row.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise SqloraError(f"{where}: {key} must be text, got {value!r}")
        if value.strip():
            question[key] = value.strip()
    if row.get("question_id") is not None:
        question["question_id"] = row["question_id"]
    question["origin"] = f"{path.name}:{line}"
    return question


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is no part of the data
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SqloraError(f"{path} line {line}: not UTF-8 text ({error.reason})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, object]]:
    for number, text in enumerate(_read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as error:
            raise SqloraError(f"{path} line {number}: not valid JSON ({error.msg})") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                query_named = any(key in header for key in QUERY_KEYS)
                lacking = [key for key in REQUIRED if key not in header and not (key == "query" and query_named)]
                if lacking:
                    raise SqloraError(f"{path} line {start}: the header names no {', '.join(lacking)} column "
                                      f"(it needs {', '.join(REQUIRED)}; it has {', '.join(header)})")
                continue
            if len(row) != len(header):
                raise SqloraError(f"{path} line {start}: {len(row)} fields, the header has {len(header)} "
                                  "(a value with a comma needs double quotes)")
            yield start, dict(zip(header, row))
    except csv.Error as error:
        raise SqloraError(f"{path} line {reader.line_num}: {error}") from None
    if header is None:
        raise SqloraError(f"{path}: empty (no header line with {', '.join(REQUIRED)})")


def _json_rows(path: Path) -> Iterator[tuple[int, object]]:
    text = _read_text(path)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise SqloraError(f"{path} line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(rows, list):
        raise SqloraError(f"{path}: expected a list of questions ([{{...}}, ...])")
    yield from zip(_entry_lines(text), rows)


def _entry_lines(text: str) -> Iterator[int]:
    """The line each entry of a JSON list starts on (the text is known to be valid)."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    line = text.count("\n", 0, position) + 1
    while True:
        start = position
        while text[position] in " \t\r\n,":
            position += 1
        line += text.count("\n", start, position)
        if text[position] == "]":
            return
        yield line
        _, end = decoder.raw_decode(text, position)
        line += text.count("\n", position, end)
        position = end
