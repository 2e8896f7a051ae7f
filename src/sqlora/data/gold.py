"""Gold queries checked on their own databases before anything trains on them or is scored by them.

A gold query that SQLite refuses (a missing table, a syntax error) or that runs past the time
limit would teach the model a query that does not run, or score every prediction of its question
wrong: such questions are left out and counted. Each query runs through the evaluator's
read-only guard (sql.sandbox.ReadOnlyDatabase): the database file is never written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..core.progress import progress
from ..sql.sandbox import DatabaseCache

# as long as BIRD's own evaluator gives a query; Spider's and BIRD's gold queries run well within it
GOLD_TIMEOUT = 30.0
# a query that returns this many rows has run; fetching them all would only cost memory
_ENOUGH_ROWS = ("too many rows", "result too large")
SHOWN = 3


def running_golds(examples: list[dict], database_file: Callable[[str], Path], *, limit: int = 0,
                  timeout: float = GOLD_TIMEOUT, desc: str = "gold queries") -> tuple[list[dict], list[tuple[dict, str]]]:
    """The examples whose gold query runs on their database, the first `limit` of them (0: all),
    and (example, SQLite's reason) for those that fail among the ones looked at. An example whose
    database file is missing is kept unjudged (Spider trains on a few such questions)."""
    kept: list[dict] = []
    failing: list[tuple[dict, str]] = []
    with DatabaseCache(max_open=8) as databases, progress(total=min(limit or len(examples), len(examples)), desc=desc,
                                                          unit="q") as bar:
        for example in examples:
            if limit and len(kept) >= limit:
                break
            path = Path(database_file(example["db_id"]))
            error = _gold_error(databases, path, example["query"], timeout) if path.is_file() else None
            if error is None:
                kept.append(example)
                bar.update(1)
            else:
                failing.append((example, error))
    return kept, failing


def _gold_error(databases: DatabaseCache, path: Path, sql: str, timeout: float) -> str | None:
    try:
        outcome = databases.get(path).run(sql, timeout=timeout)
    except sqlite3.Error as error:
        return f"database unreadable: {error}"
    return None if outcome.ok or outcome.error in _ENOUGH_ROWS else outcome.error


def describe_failures(failing: list[tuple[dict, str]], shown: int = SHOWN) -> list[str]:
    """The first few failing gold queries, one line each: where the question is, and why."""
    lines = [f"  {example.get('origin', '?')} ({example['db_id']}): {error}  <- {_short(example['query'])}"
             for example, error in failing[:shown]]
    if len(failing) > shown:
        lines.append(f"  and {len(failing) - shown} more")
    return lines


def _short(sql: str, limit: int = 100) -> str:
    sql = " ".join(sql.split())
    return sql if len(sql) <= limit else sql[: limit - 3] + "..."
