"""One question's answer on one database, chosen as the predict stage chooses (`sqlora ask`): of
the model's candidates, the first whose SQL runs and returns rows, else the first that does once
the names SQLite says are missing are repaired (`choose.choose_runnable`), else the first that
runs; then that query's rows. Every query runs through the read-only sandbox
(`sqlora.sql.sandbox`) within the timeout, each distinct query once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..data.prompts import extract_sql
from ..sql.sandbox import Outcome, ReadOnlyDatabase
from .choose import choose_runnable


@dataclass
class Answer:
    sql: str                       # "" where the model wrote none
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)  # the first max_rows
    row_count: int = 0
    error: str | None = None       # the sandbox's reason where the query gave no rows
    candidate: int = 0             # which of the model's candidates it is
    repaired: bool = False         # its names were repaired


def answer_on_database(generations: list[str], database: ReadOnlyDatabase, *, repair: bool = True,
                       timeout: float = 5.0, max_rows: int = 20,
                       extract: Callable[[str], str] | None = extract_sql) -> Answer:
    """The answer that a question's candidate generations (best first) give on `database`.
    `extract` turns a generation into its SQL (None: the generations are SQL already)."""
    runs: dict[str, Outcome] = {}

    def run(sql: str) -> Outcome:
        if sql not in runs:  # rows past the first max_rows are counted, not kept
            runs[sql] = database.run(sql, timeout=timeout, keep=max(1, max_rows))
        return runs[sql]

    sqls = [extract(text) for text in generations] if extract is not None else list(generations)
    choice = choose_runnable(sqls, database, timeout, repair=repair, run_query=run)
    outcome = run(choice.sql)
    return Answer(sql=choice.sql, columns=list(outcome.names), rows=(outcome.rows or [])[:max_rows],
                  row_count=outcome.row_count, error=outcome.error, candidate=choice.index,
                  repaired=choice.repaired)
