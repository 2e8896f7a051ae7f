"""Execution accuracy of predicted SQL, judged like test-suite-sql-eval, safely and in parallel.

    python -m sqlora.eval --gold dev_gold.sql --pred pred.sql --db database/ [--plug-value]

A prediction is right when its result equals the gold query's result on every database of the
question (``DBDIR/<db_id>/*.sqlite``): as a multiset of rows, or as a list when the gold query
has ORDER BY, with the columns in any order; two empty results are equal.  DISTINCT is dropped
from both queries unless keep_distinct.  With plug_value, the gold query's literal values may
replace the prediction's (see eval/plugvalue.py for the bound on that search).  Predictions run under
the guards of sql/sandbox.py.  Like the reference, every ``value`` in a prediction's text is first
replaced by ``1`` (``fill_placeholder``).  docs/EVALUATION.md tells the whole story.

``evaluate_files`` judges several prediction files against one gold file in both modes (strict
and plug-value) in one pass: each gold query runs once per database, each prediction once as
written.  ``evaluate`` is the one-file, one-mode case.

With ``metric="bird"`` a prediction is judged as BIRD's evaluator judges it: right when the set
of its result rows equals the gold query's (rows as tuples, columns in their order, duplicates
and row order ignored); both queries run as written (no DISTINCT dropped, no ``value``
placeholder, no plug-value).

Questions are grouped by Spider's hardness where Spider's rules read the gold query, and as
``n/a`` where they do not (hardness.gold_hardness): those count in ``all`` and in their own
``n/a`` group, which the scores hold only when there is such a question.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import SqloraError, run_stage
from ..core.files import write_text_atomic
from ..core.progress import progress
from ..data.layouts import BIRD, SOURCE_NAMES
from ..sql.sandbox import DatabaseCache, Outcome, database_files, is_compile_error
from ..sql.tokens import tokenize
from .hardness import NOT_RATED, gold_hardness, hardness
from .plugvalue import DEFAULT_LIMIT, PlugSearch

# Spider's hardness levels, and the levels scores are reported for
LEVELS = ("easy", "medium", "hard", "extra")
ALL_LEVELS = (*LEVELS, "all")
# how predictions are judged: Spider's test-suite rules, or BIRD's (the sets of result rows equal)
SPIDER_METRIC, BIRD_METRIC = "spider", "bird"
METRICS = (SPIDER_METRIC, BIRD_METRIC)
# The reference's placeholder rule, applied to every prediction before anything else
# (test-suite-sql-eval, evaluation.py: ``p_str = p_str.replace("value", "1")``)
PLACEHOLDER, PLACEHOLDER_FILL = "value", "1"
# ProcessPoolExecutor on Windows: "max_workers must be <= 61"
WINDOWS_MAX_WORKERS = 61
ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)
# MySQL's YEAR(CURDATE()); the reference runs it as 2020, the year Spider's answers assume
CURRENT_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)
# Exploring column orders gives up (no match) past this many partial assignments; real results
# never come close, since each step must keep the columns chosen so far consistent row by row.
MAX_PERMUTATION_STEPS = 50_000

__all__ = ["EvalResult", "evaluate", "evaluate_files", "format_table", "hardness", "results_match", "main"]


@dataclass
class EvalResult:
    scores: dict[str, dict[str, float]]
    per_question: list[dict]


@dataclass(frozen=True)
class Question:
    """One gold query and one prediction."""

    index: int
    db_id: str
    gold: str
    pred: str


@dataclass(frozen=True)
class GoldQuestion:
    """One gold query and the predictions of several files for it, judged together."""

    index: int
    db_id: str
    gold: str
    preds: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    db_dir: str
    plug_value: bool = False
    keep_distinct: bool = False
    timeout: float = 5.0
    plug_limit: int = DEFAULT_LIMIT
    # time for all substitutions of one question together; None: the query timeout, at least 1 s
    plug_seconds: float | None = None
    metric: str = SPIDER_METRIC


def resolve_metric(metric: str, layout: str) -> tuple[str, str]:
    """eval.metric with `auto` resolved by the data's layout (sqlora.data.layouts): BIRD's
    metric for data from BIRD's layout, Spider's for the rest; and what chose it."""
    if metric in METRICS:
        return metric, "eval.metric"
    chosen = BIRD_METRIC if layout == BIRD else SPIDER_METRIC
    return chosen, f"auto: data from {SOURCE_NAMES[layout]}"


def evaluate(
    gold_path,
    pred_path,
    db_dir,
    *,
    plug_value: bool = False,
    keep_distinct: bool = False,
    timeout: float = 5.0,
    workers: int | None = None,
    metric: str = SPIDER_METRIC,
) -> EvalResult:
    """Judge every prediction of pred_path against gold_path; see the module docstring.

    workers: processes to spread the questions over (None: one per CPU, at most 61 on Windows;
    1: this process only).  Like any multiprocessing on Windows or macOS (and on Linux, where the
    forkserver method is used), a script that calls this with workers > 1 needs the
    ``if __name__ == "__main__":`` guard.  Questions whose database folder is missing get the
    error "database missing: ..." and are left out of the scores.
    """
    results = evaluate_files(
        gold_path,
        [pred_path],
        db_dir,
        plug_values=(plug_value,),
        keep_distinct=keep_distinct,
        timeout=timeout,
        workers=workers,
        metric=metric,
    )
    return results[0][plug_value]


def evaluate_files(
    gold_path,
    pred_paths: Sequence,
    db_dir,
    *,
    plug_values: Sequence[bool] = (False, True),
    keep_distinct: bool = False,
    timeout: float = 5.0,
    workers: int | None = None,
    metric: str = SPIDER_METRIC,
) -> list[dict[bool, EvalResult]]:
    """Judge several prediction files against one gold file, in each mode of plug_values
    (False: strict, True: plug-value), in one pass; see ``evaluate`` for the other arguments.

    Each gold query runs once per database and each prediction once as written; plug-value
    substitutions run only for predictions that are wrong as written.  Returns, per prediction
    file in order, {plug_value: EvalResult}; each result is what ``evaluate`` gives for that
    file and mode.
    """
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise SqloraError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise SqloraError(f"workers must be a positive integer, got {workers!r}")
    modes = tuple(dict.fromkeys(bool(mode) for mode in plug_values))
    if not modes:
        raise SqloraError("plug_values is empty: nothing to judge")
    if metric not in METRICS:
        raise SqloraError(f"metric {metric!r}: allowed values are {', '.join(METRICS)}")
    if metric == BIRD_METRIC and True in modes:
        raise SqloraError("plug-value is a rule of Spider's evaluation; BIRD's metric has none")
    db_dir = Path(db_dir)
    if not db_dir.is_dir():
        raise SqloraError(f"database folder not found: {db_dir}")
    golds = read_gold(gold_path)
    predictions = [read_predictions(pred_path, golds, gold_path) for pred_path in pred_paths]
    questions = [
        GoldQuestion(index, db_id, gold_sql, tuple(preds[index] for preds in predictions))
        for index, (gold_sql, db_id) in enumerate(golds)
    ]
    settings = Settings(str(db_dir), keep_distinct=keep_distinct, timeout=float(timeout), metric=metric)
    verdicts = judge_all(questions, settings, worker_count(workers), modes)
    skipped = [q for q, records in zip(questions, verdicts) if records and records[0][0].get("skipped")]
    if skipped:
        missing = ", ".join(sorted({question.db_id for question in skipped}))
        print(f"warning: {len(skipped)} questions not scored, database missing: {missing}", file=sys.stderr)
    results = []
    for file_index in range(len(predictions)):
        by_mode = {}
        for mode_index, mode in enumerate(modes):
            per_question = [records[file_index][mode_index] for records in verdicts]
            by_mode[mode] = EvalResult(scores=score(per_question), per_question=per_question)
        results.append(by_mode)
    return results


def worker_count(workers: int | None) -> int:
    """Processes to judge with: workers, or one per CPU; at most 61 on Windows, where
    ProcessPoolExecutor refuses more."""
    count = workers or os.cpu_count() or 1
    if sys.platform == "win32":
        count = min(count, WINDOWS_MAX_WORKERS)
    return count


def read_questions(gold_path, pred_path) -> list[Question]:
    """Pair gold lines (SQL<TAB>db_id) with prediction lines; the counts must agree."""
    golds = read_gold(gold_path)
    preds = read_predictions(pred_path, golds, gold_path)
    return [Question(index, db_id, gold_sql, pred) for index, ((gold_sql, db_id), pred) in enumerate(zip(golds, preds))]


def read_gold(gold_path) -> list[tuple[str, str]]:
    """(SQL, db_id) of each line of a gold file (SQL<TAB>db_id); trailing empty lines are ignored."""
    gold_lines = _read_lines(gold_path, "gold")
    while gold_lines and not gold_lines[-1].strip():
        gold_lines.pop()
    golds = []
    for index, gold_line in enumerate(gold_lines):
        gold_sql, tab, db_id = gold_line.strip().rpartition("\t")
        if not tab or not gold_sql.strip() or not db_id.strip():
            raise SqloraError(f"{gold_path} line {index + 1}: expected 'SQL<TAB>db_id'")
        golds.append((gold_sql.strip(), db_id.strip()))
    return golds


def read_predictions(pred_path, golds: list[tuple[str, str]], gold_path) -> list[str]:
    """One prediction per gold line, as written (stripped); the counts must agree."""
    pred_lines = _read_lines(pred_path, "prediction")
    if len(golds) != len(pred_lines):
        raise SqloraError(
            f"{gold_path} has {len(golds)} gold lines but {pred_path} has "
            f"{len(pred_lines)} prediction lines: they must pair up line by line"
        )
    preds = []
    for (_, db_id), pred_line in zip(golds, pred_lines):
        # a prediction file written as SQL<TAB>db_id (like the gold file) is read the same way
        pred_sql, tab, pred_db = pred_line.rpartition("\t")
        if not tab or pred_db.strip() != db_id:
            pred_sql = pred_line
        preds.append(pred_sql.strip())
    return preds


def _read_lines(path, what: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise SqloraError(f"{what} file not found: {path}")
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def judge_all(
    questions: list[GoldQuestion], settings: Settings, workers: int, modes: tuple[bool, ...]
) -> list[list[list[dict]]]:
    """Judge questions in worker processes, each given chunks of one database's questions.

    Returns, per question in index order, the records of ``judge_question``.
    """
    verdicts: dict[int, list[list[dict]]] = {}
    with progress(total=len(questions), desc="evaluate", unit="q") as bar:
        if workers == 1 or len(questions) < 2:
            with DatabaseCache() as databases:
                for question in questions:
                    verdicts[question.index] = judge_question(question, settings, databases, modes)
                    bar.update(1)
        else:
            chunks = plan_chunks(questions, workers)
            pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_process_context())
            with pool:
                futures = [pool.submit(_judge_chunk, chunk, settings, modes) for chunk in chunks]
                try:
                    for future in as_completed(futures):
                        chunk_verdicts = future.result()
                        verdicts.update(chunk_verdicts)
                        bar.update(len(chunk_verdicts))
                except BrokenProcessPool as error:
                    raise SqloraError(
                        f"an evaluation worker process died ({error}); run with workers=1 to see why"
                    ) from error
    return [verdicts[index] for index in sorted(verdicts)]


def _process_context():
    """forkserver where there is one: fork copies threads' locks (tqdm's monitor thread, say)
    and Python 3.12+ warns about it; spawn elsewhere (Windows, and macOS by default)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context()


def plan_chunks(questions: list[GoldQuestion], workers: int) -> list[list[GoldQuestion]]:
    """Chunks of questions of one database each, biggest databases first, about 4 per worker."""
    by_database: dict[str, list[GoldQuestion]] = defaultdict(list)
    for question in questions:
        by_database[question.db_id].append(question)
    size = max(1, math.ceil(len(questions) / (workers * 4)))
    chunks = []
    for group in sorted(by_database.values(), key=len, reverse=True):
        chunks.extend(group[start : start + size] for start in range(0, len(group), size))
    return chunks


_PROCESS_DATABASES: DatabaseCache | None = None


def _judge_chunk(
    chunk: list[GoldQuestion], settings: Settings, modes: tuple[bool, ...]
) -> dict[int, list[list[dict]]]:
    """Worker entry point: connections stay open for the chunks that come next."""
    global _PROCESS_DATABASES
    if _PROCESS_DATABASES is None:
        _PROCESS_DATABASES = DatabaseCache()
    return {question.index: judge_question(question, settings, _PROCESS_DATABASES, modes) for question in chunk}


def prepare_sql(sql: str, keep_distinct: bool) -> str:
    """What the reference does to both queries before running them."""
    sql = sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
    if keep_distinct:
        return sql
    tokens = tokenize(sql)
    return "".join(token.text for token in tokens if not (token.kind == "word" and token.low == "distinct"))


def fill_placeholder(pred: str) -> str:
    """The reference's rule for a prediction before it is judged: every ``value`` in its text,
    wherever it is (a bare word, part of a name, inside a string; lower case only), becomes
    ``1``; so ``LIMIT value`` runs as ``LIMIT 1``, and under plug-value that ``1`` is a slot."""
    return pred.replace(PLACEHOLDER, PLACEHOLDER_FILL)


def as_executed(sql: str) -> str:
    return CURRENT_YEAR.sub("2020", sql)


def judge(question: Question, settings: Settings, databases: DatabaseCache) -> dict:
    """One question's verdict: a per-question record with exec 0/1 and the reason when 0
    (with plug-value when settings.plug_value)."""
    together = GoldQuestion(question.index, question.db_id, question.gold, (question.pred,))
    return judge_question(together, settings, databases, (settings.plug_value,))[0][0]


def judge_question(
    question: GoldQuestion, settings: Settings, databases: DatabaseCache, modes: tuple[bool, ...]
) -> list[list[dict]]:
    """The records of each prediction (outer list) in each mode of modes (inner list; False:
    strict, True: plug-value), running the gold query once per database and each prediction
    once as written.  settings.plug_value is not used here: modes says it."""
    level = gold_hardness(question.gold)
    bird = settings.metric == BIRD_METRIC

    def record(pred: str, **fields) -> dict:
        return {
            "index": question.index,
            "db_id": question.db_id,
            "hardness": level,
            "exec": 0,
            "error": None,
            "gold": question.gold,
            "pred": pred,
            **fields,
        }

    def in_every_mode(pred: str, **fields) -> list[dict]:
        return [record(pred, **fields) for _ in modes]

    files = database_files(settings.db_dir, question.db_id)
    if not files:
        missing = f"database missing: {question.db_id}"
        return [in_every_mode(pred, error=missing, skipped=True) for pred in question.preds]
    verdicts: list[list[dict] | None] = [
        in_every_mode(pred, error="empty prediction") if not pred.strip() else None for pred in question.preds
    ]
    pending = [k for k, verdict in enumerate(verdicts) if verdict is None]

    def fail_pending(error: str) -> list[list[dict]]:
        for k in pending:
            verdicts[k] = in_every_mode(question.preds[k], error=error)
        return verdicts

    if not pending:
        return verdicts
    try:
        for path in files:
            databases.get(path)
    except sqlite3.Error as error:
        return fail_pending(f"database unreadable: {error}")

    gold_sql = question.gold if bird else prepare_sql(question.gold, settings.keep_distinct)
    golds: list[Outcome] = []
    for path in files:
        outcome = databases.get(path).run(gold_sql if bird else as_executed(gold_sql), timeout=settings.timeout)
        if not outcome.ok:
            return fail_pending(f"gold failed: {outcome.error}")
        golds.append(outcome)
    order_matters = bool(ORDER_BY.search(gold_sql))
    judge_query = _QueryJudge(files, golds, databases, order_matters=order_matters, row_sets=bird)

    for k in pending:
        pred = question.preds[k]
        pred_sql = pred if bird else prepare_sql(fill_placeholder(pred), settings.keep_distinct)
        written_error = judge_query(pred_sql, settings.timeout)
        records = []
        for plug_value in modes:
            verdict = record(pred)
            error = written_error
            if error is not None and plug_value:
                error = _plug_values(gold_sql, pred_sql, error, judge_query, settings, verdict)
            verdict["exec"] = int(error is None)
            verdict["error"] = error
            records.append(verdict)
        verdicts[k] = records
    return verdicts


class _QueryJudge:
    """Runs a query on each of a question's databases and compares with the gold results: by
    Spider's rules, or (row_sets) as BIRD does, the sets of rows equal."""

    def __init__(
        self, files: list[Path], golds: list[Outcome], databases: DatabaseCache, *, order_matters: bool,
        row_sets: bool = False,
    ):
        self.files = files
        self.golds = golds
        self.databases = databases
        self.order_matters = order_matters
        self.row_sets = row_sets

    def __call__(self, sql: str, timeout: float) -> str | None:
        """None when sql's results equal the gold's on every database, else the reason."""
        if self.row_sets:
            return self._same_row_sets(sql, timeout)
        for path, gold in zip(self.files, self.golds):
            gold_rows = gold.rows or []
            outcome = self.databases.get(path).run(
                as_executed(sql),
                timeout=timeout,
                # more rows than the gold's cannot match; other column counts neither, except
                # when the gold result is empty
                max_rows=len(gold_rows),
                expected_columns=gold.columns if gold_rows else None,
            )
            if outcome.error == "too many rows":
                return f"too many rows (gold has {len(gold_rows)})"
            if outcome.error == "wrong number of columns":
                noun = "column" if outcome.columns == 1 else "columns"
                return f"wrong result ({outcome.columns} {noun}, gold has {gold.columns})"
            if not outcome.ok:
                return outcome.error
            if not results_match(gold_rows, outcome.rows or [], self.order_matters):
                return "wrong result"
        return None

    def _same_row_sets(self, sql: str, timeout: float) -> str | None:
        for path, gold in zip(self.files, self.golds):
            gold_rows = gold.rows or []
            outcome = self.databases.get(path).run(
                sql, timeout=timeout, expected_columns=gold.columns if gold_rows else None)
            if outcome.error == "wrong number of columns":
                noun = "column" if outcome.columns == 1 else "columns"
                return f"wrong result ({outcome.columns} {noun}, gold has {gold.columns})"
            if not outcome.ok:
                return outcome.error
            if not rows_match_as_sets(gold_rows, outcome.rows or []):
                return "wrong result"
        return None


def rows_match_as_sets(gold: list[tuple], pred: list[tuple]) -> bool:
    """BIRD's equality of two results (its evaluation.py: set(predicted) == set(ground_truth)):
    the same distinct rows, each row's values in the same column order; order and repeats of
    rows do not matter."""
    return set(gold) == set(pred)


def _plug_values(gold_sql, pred_sql, error, judge_query, settings: Settings, record: dict) -> str | None:
    """Try the prediction with gold values in its literal slots, within a count and time budget.

    Returns None when some substitution matches, else the written prediction's own error.
    """
    search = PlugSearch(gold_sql, pred_sql, limit=settings.plug_limit)
    record["plug_tried"] = 0
    record["plug_capped"] = False
    if error == "timeout":  # each substitution would likely take as long: not tried (a bound)
        record["plug_capped"] = search.possible
        return error
    # no substitution changes the text's syntax, names or number of result columns
    if is_compile_error(error) or error.startswith("wrong result ("):
        return error
    budget = settings.plug_seconds if settings.plug_seconds is not None else max(settings.timeout, 1.0)
    deadline = time.monotonic() + budget
    for candidate in search:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            record["plug_capped"] = True
            break
        record["plug_tried"] += 1
        candidate_error = judge_query(candidate, min(settings.timeout, remaining))
        if candidate_error is None:
            return None
        if candidate_error == "timeout":
            record["plug_capped"] = True
            break
    record["plug_capped"] = record["plug_capped"] or search.capped
    return error


def results_match(gold: list[tuple], pred: list[tuple], order_matters: bool) -> bool:
    """The reference's equality of two results: same rows (in order when order_matters) under
    some reordering of the prediction's columns; two empty results are equal."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred):
        return False
    width = len(gold[0])
    if len(pred[0]) != width:
        return False
    if not _same_sorted_rows(gold, pred, order_matters):
        return False
    return _column_order_exists(gold, pred, order_matters)


def _same_sorted_rows(gold: list[tuple], pred: list[tuple], order_matters: bool) -> bool:
    """The reference's quick rejection: rows compared with their values sorted by text and type
    name.  It is a necessary condition, except that 1 and 1.0 sort apart; kept for agreement."""

    def sorted_row(row: tuple) -> tuple:
        return tuple(sorted(row, key=lambda value: str(value) + str(type(value))))

    if order_matters:
        return [sorted_row(row) for row in gold] == [sorted_row(row) for row in pred]
    return {sorted_row(row) for row in gold} == {sorted_row(row) for row in pred}


def _column_order_exists(gold: list[tuple], pred: list[tuple], order_matters: bool) -> bool:
    """Is there an order of pred's columns that makes the results equal?

    Gold columns are matched one at a time to prediction columns with the same multiset of
    values; after each choice the chosen columns must agree as a whole (projected rows equal as
    multiset or list), which cuts the search at once on real data.  Identical prediction
    columns are interchangeable, so only one of them is tried at each step.
    """
    width = len(gold[0])
    gold_columns = list(zip(*gold))
    pred_columns = list(zip(*pred))
    gold_counts = [Counter(column) for column in gold_columns]
    pred_counts = [Counter(column) for column in pred_columns]
    candidates = [[k for k in range(width) if pred_counts[k] == gold_counts[j]] for j in range(width)]
    if any(not options for options in candidates):
        return False
    order = sorted(range(width), key=lambda j: len(candidates[j]))

    def consistent(gold_picks: list[int], pred_picks: list[int]) -> bool:
        gold_part = list(zip(*(gold_columns[j] for j in gold_picks)))
        pred_part = list(zip(*(pred_columns[k] for k in pred_picks)))
        if order_matters:
            return gold_part == pred_part
        return Counter(gold_part) == Counter(pred_part)

    steps = 0

    def extend(pred_picks: list[int]) -> bool:
        nonlocal steps
        depth = len(pred_picks)
        if depth == width:
            return True
        gold_column = order[depth]
        tried: set[tuple] = set()
        for k in candidates[gold_column]:
            if k in pred_picks or pred_columns[k] in tried:
                continue
            tried.add(pred_columns[k])
            steps += 1
            if steps > MAX_PERMUTATION_STEPS:
                return False
            picks = [*pred_picks, k]
            if consistent(order[: depth + 1], picks) and extend(picks):
                return True
        return False

    return extend([])


def score(per_question: list[dict]) -> dict[str, dict[str, float]]:
    """Count and execution accuracy per hardness level and over all judged questions; the
    NOT_RATED level only where some question has it."""
    scores = {}
    judged = [record for record in per_question if not record.get("skipped")]
    for level in reported_levels({record["hardness"] for record in judged}):
        records = [r for r in judged if level == "all" or r["hardness"] == level]
        right = sum(record["exec"] for record in records)
        scores[level] = {"count": len(records), "exec": right / len(records) if records else 0.0}
    return scores


def reported_levels(levels) -> tuple[str, ...]:
    """The levels a score is reported for: Spider's four, then NOT_RATED where levels holds
    it, then all."""
    return (*LEVELS, *([NOT_RATED] if NOT_RATED in levels else []), "all")


def format_table(result: EvalResult) -> str:
    """The reference's table: a header of levels, a count row and an execution row."""

    def row(name: str, cells: list[str]) -> str:
        return (f"{name:20} " + " ".join(f"{cell:20}" for cell in cells)).rstrip()

    levels = list(result.scores)
    lines = [
        row("", levels),
        row("count", [str(int(result.scores[level]["count"])) for level in levels]),
        "=====================   EXECUTION ACCURACY     =====================",
        row("execution", [f"{result.scores[level]['exec']:.3f}" for level in levels]),
    ]
    return "\n".join(lines)


def error_category(error: str | None) -> str | None:
    """'syntax error: near "x"' -> 'syntax error'; 'too many rows (gold has 3)' -> 'too many rows'."""
    if error is None:
        return None
    return re.split(r"[:(]", error, maxsplit=1)[0].strip()


def metrics(result: EvalResult, settings: dict | None = None) -> dict:
    """The --json document: the scores, plus why predictions failed and what was skipped."""
    document: dict = {level: dict(values) for level, values in result.scores.items()}
    for values in document.values():
        values["count"] = int(values["count"])
    judged = [record for record in result.per_question if not record.get("skipped")]
    document["errors"] = dict(Counter(error_category(r["error"]) for r in judged if r["error"]).most_common())
    document["skipped"] = len(result.per_question) - len(judged)
    if any("plug_tried" in record for record in judged):
        document["plug_value"] = {
            "substitutions_run": sum(record.get("plug_tried", 0) for record in judged),
            "questions_capped": sum(bool(record.get("plug_capped")) for record in judged),
        }
    if settings is not None:
        document["settings"] = settings
    return document


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sqlora.eval",
        description="Execution accuracy of predicted SQL (Spider, test-suite-sql-eval semantics).",
    )
    parser.add_argument("--gold", required=True, help="gold file: one 'SQL<TAB>db_id' per line")
    parser.add_argument("--pred", required=True, help="predictions: one SQL per line, same order")
    parser.add_argument("--db", required=True, help="folder with <db_id>/<db_id>.sqlite")
    parser.add_argument(
        "--plug-value", action="store_true", help="let gold values fill the prediction's literals"
    )
    parser.add_argument("--keep-distinct", action="store_true", help="do not remove DISTINCT before running")
    parser.add_argument("--per-question", metavar="OUT.jsonl", help="write one JSON line per question")
    parser.add_argument("--json", metavar="METRICS.json", help="write the scores as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per query (default 5)")
    parser.add_argument("--metric", choices=METRICS, default=SPIDER_METRIC,
                        help="spider: test-suite rules (default); bird: the sets of result rows equal")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default or 0: CPU count; 1: none)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = evaluate(
        args.gold,
        args.pred,
        args.db,
        plug_value=args.plug_value,
        keep_distinct=args.keep_distinct,
        timeout=args.timeout,
        workers=args.workers or None,
        metric=args.metric,
    )
    print(format_table(result))
    if args.per_question:
        lines = (json.dumps(record, ensure_ascii=False) + "\n" for record in result.per_question)
        write_text_atomic(args.per_question, "".join(lines))
    if args.json:
        settings = {
            "plug_value": args.plug_value,
            "keep_distinct": args.keep_distinct,
            "timeout": args.timeout,
            "metric": args.metric,
        }
        write_text_atomic(args.json, json.dumps(metrics(result, settings), indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
