"""Which of a model's candidate answers to keep, and the repair of the names SQLite says are missing.

Execution-guided choice (``first_runnable``, ``choose_runnable``): the first candidate that runs
on the question's database and returns rows. Name repair (``repair_names``): a column taken from
the wrong table of a join, a misspelt table or column, or a column of a table the query lacks,
joined in through its foreign key. ``choose_sql`` does both for a whole set of questions, as the
predict stage and ``sqlora ask`` keep them. Every query runs through the evaluator's read-only
sandbox (``sqlora.sql.sandbox``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from difflib import SequenceMatcher
from pathlib import Path
from typing import NamedTuple

from ..sql.sandbox import DatabaseCache, Outcome, ReadOnlyDatabase, database_files
from ..sql.tokens import tokenize


class Choice(NamedTuple):
    index: int       # the candidate kept
    sql: str         # its SQL, with its names repaired where that made it return rows
    repaired: bool


def first_runnable(sqls: list[str], database: ReadOnlyDatabase, timeout: float = 2.0) -> int:
    """Execution-guided choice among a model's candidates, best first: the index of the first that
    runs without error and returns rows, else of the first that runs, else 0 (the model's best)."""
    return choose_runnable(sqls, database, timeout, repair=False).index


def choose_runnable(sqls: list[str], database: ReadOnlyDatabase, timeout: float = 2.0, *,
                    repair: bool = True, run_query: Callable[[str], Outcome] | None = None) -> Choice:
    """As `first_runnable`; with `repair`, where no candidate runs and returns rows, the first
    that does once its missing names are repaired (`repair_names`) comes next. `run_query` runs
    a query (default: on `database` within `timeout`); each distinct query runs once."""
    runs: dict[str, Outcome] = {}  # beams often repeat a query, and repairs often meet
    run_query = run_query or (lambda sql: database.run(sql, timeout=timeout))

    def run(sql: str) -> Outcome:
        if sql not in runs:
            runs[sql] = run_query(sql)  # an empty answer is refused before SQLite sees it
        return runs[sql]

    outcomes = []
    for i, sql in enumerate(sqls):
        outcome = run(sql)
        if outcome.ok and outcome.rows:
            return Choice(i, sql, False)
        outcomes.append(outcome)
    if repair:
        for i, (sql, outcome) in enumerate(zip(sqls, outcomes)):
            fixed = repair_names(sql, outcome, database, run=run)
            if fixed is not None:
                return Choice(i, fixed, True)
    index = next((i for i, outcome in enumerate(outcomes) if outcome.ok), 0)
    return Choice(index, sqls[index] if sqls else "", False)


_NO_SUCH_COLUMN = re.compile(r"no such column: (?:(\w+)\.)?(\w+)", re.IGNORECASE)

_NO_SUCH_TABLE = re.compile(r"no such table: (?:main\.)?(\w+)", re.IGNORECASE)

_CLAUSE_WORDS = ("on|where|join|group|order|limit|inner|left|right|full|outer|natural|cross|union|"
                 "except|intersect|having|using")

# a table in FROM or JOIN, and its alias if it has one
_TABLE_REFERENCE = re.compile(rf"""\b(?:from|join)\s+[`"\[]?(\w+)[`"\]]?"""
                              rf"(?:\s+(?:as\s+)?(?!(?:{_CLAUSE_WORDS})\b)(\w+))?", re.IGNORECASE)


def repair_names(sql: str, outcome: Outcome, database: ReadOnlyDatabase, timeout: float = 2.0,
                 attempts: int = 3, run: Callable[[str], Outcome] | None = None) -> str | None:
    """sql with the names that SQLite reports missing repaired, if the result runs and returns
    rows; else None. Three repairs, tried in this order on each missing name:

    - a column taken from the wrong table: `T1.column` pointed at the one other table of the query
      that has that column. Small models join the right tables and then take a column from the
      wrong one (`... FROM concert AS T1 JOIN stadium AS T2 ... ORDER BY T1.capacity`). The fix
      is made only where exactly one table of the query has the column, and the alias itself
      stands for one table;
    - a misspelt name: a table that the database lacks, or a column that no table of the query
      has, replaced by the one name of the database (for a column: of the tables it may belong
      to) that it most resembles (`similar_name`: `pet_type` -> `PetType`, `area` ->
      `SurfaceArea`, `cars` -> `cars_data`);
    - a column of a table that the query lacks: of the tables outside the query's SELECT that
      have the column, the one nearest by foreign keys, joined in through the one key that links
      it to a table of that SELECT, or through the one table between them (`_join_fix`). Small
      models often name the column they need and leave out its table. The join is tried before
      a misspelling, but in a join condition (`ON T1.a = T2.b`), whose tables are there
      already, after it.

    A fix that would compare a column with itself is refused: in `ON T1.code = T2.code` with no
    `code` in T2's table, `T1.code = T1.code` would join every row with every row. The column of
    T2's own table that `code` most resembles (`CountryCode`) is tried instead.
    `run` runs a query (default: on `database`).
    """
    run = run or (lambda query: database.run(query, timeout=timeout))
    for _ in range(attempts):
        fixed = next((sql_and_column for sql_and_column in _name_fixes(sql, outcome.error or "", database)
                      if not _compares_with_itself(*sql_and_column)), None)
        if fixed is None:
            return None
        sql = fixed[0]
        outcome = run(sql)
        if outcome.ok:
            return sql if outcome.rows else None
    return None


def _compares_with_itself(sql: str, column: str | None) -> bool:
    if column is None:
        return False
    same = rf"\b{re.escape(column)}"
    return re.search(rf"{same}\s*(?:=|==|<>|!=|<=|>=|<|>)\s*{same}\b", sql, re.IGNORECASE) is not None


def _name_fixes(sql: str, error: str, database: ReadOnlyDatabase) -> Iterator[tuple[str, str | None]]:
    """The ways to mend the name that error reports missing, best first: each is sql with the name
    replaced, and the new `alias.column` where one was written."""
    tables: dict[str, set[str]] = {}  # alias (or table name), lower-cased: the tables it stands for
    written: dict[str, str] = {}  # the same, as written
    for table, name in _TABLE_REFERENCE.findall(sql):
        tables.setdefault((name or table).lower(), set()).add(table.lower())
        written.setdefault((name or table).lower(), name or table)
    missing_table = _NO_SUCH_TABLE.search(error)
    if missing_table is not None:
        table = missing_table.group(1)
        replacement = similar_name(table, database.tables())
        if replacement is not None:
            yield _rename(sql, None, table, replacement), None
        return
    match = _NO_SUCH_COLUMN.search(error)
    if match is None:
        return
    alias, column = match.groups()
    if alias is None:
        names = {table for owners in tables.values() for table in owners}
        joined = _join_fix(sql, None, column, database)
        if joined is not None:
            yield joined
        replacement = similar_name(column, [c for table in sorted(names) for c in database.column_names(table)])
        if replacement is not None:
            yield _rename(sql, None, column, replacement), None
        return
    owners_of_alias = tables.get(alias.lower(), set())
    if len(owners_of_alias) != 1:
        return
    owners = [name for name, names in tables.items()
              if len(names) == 1 and column.lower() in database.columns(next(iter(names)))]
    if len(owners) == 1 and owners[0] != alias.lower():
        owner = written[owners[0]]
        yield _rename(sql, alias, column, column, owner), f"{owner}.{column}"
    if len(owners) > 1:
        return
    # no other table of the query has it, or pointing there would compare it with itself: a table
    # the query lacks, or a misspelling? In a join condition the tables are there: a misspelling.
    replacement = similar_name(column, database.column_names(next(iter(owners_of_alias))))
    misspelt = None if replacement is None else (_rename(sql, alias, column, replacement), f"{alias}.{replacement}")
    in_join_condition = _in_join_condition(sql, alias, column)
    if in_join_condition and misspelt is not None:
        yield misspelt
    joined = _join_fix(sql, alias, column, database) if not owners else None  # only when asked for
    if joined is not None:
        yield joined
    if not in_join_condition and misspelt is not None:
        yield misspelt


_CLAUSE_ENDS = frozenset({"where", "group", "order", "limit", "having", "union", "intersect", "except"})


def _join_fix(sql: str, alias: str | None, column: str, database: ReadOnlyDatabase) -> tuple[str, str] | None:
    """sql with the table that has `column` joined in, where the query lacks that table: of the
    tables outside the query's SELECT that have the column, the one nearest to that SELECT by
    foreign keys, joined through the one key that links them (`... FROM city AS T1 WHERE
    T1.Continent = 'Asia'` -> `... FROM city AS T1 JOIN country AS T2 ON T1.CountryCode =
    T2.Code WHERE T2.Continent = 'Asia'`), or where no key does, through the one table between
    them (`_key_routes`). Two tables equally near, or two ways to join one, are no answer. Bare
    names that the new tables would make ambiguous get their table written before them.
    Returns the new sql and the column as now written."""
    tokens = tokenize(sql)
    starts = [0]
    for token in tokens:
        starts.append(starts[-1] + len(token.text))
    scope_of = _select_scopes(tokens)
    words = [i for i, token in enumerate(tokens) if token.kind not in ("space", "comment")]
    # the missing column's tokens (for alias.column: the alias's)
    uses = [i if qualifier is None else qualifier for i, qualifier in _references(tokens, words, alias, column)]
    scopes = {scope_of[i] for i in uses}
    if len(scopes) != 1:
        return None
    scope = scopes.pop()
    every_name = set()
    tables: dict[str, str] = {}  # name or alias in this SELECT, lower-cased -> its table ("": two tables)
    written: dict[str, str] = {}
    from_token = None
    for match in _TABLE_REFERENCE.finditer(sql):
        table, name = match.group(1), match.group(2) or match.group(1)
        every_name.add(name.lower())
        token_index = bisect_right(starts, match.start()) - 1
        if scope_of[token_index] == scope:
            from_token = token_index if from_token is None else from_token
            tables[name.lower()] = table if tables.get(name.lower(), table).lower() == table.lower() else ""
            written[name.lower()] = name
    if from_token is None:
        return None
    in_scope = {table.lower() for table in tables.values()}
    found = []  # (steps, routes) for each table outside the SELECT that has the column
    for table in database.tables():
        if table.lower() in in_scope or column.lower() not in database.columns(table):
            continue
        routes = _key_routes(database, tables, table)
        if alias is not None and any(route[0] == alias.lower() for route in routes):
            routes = {route for route in routes if route[0] == alias.lower()}
        if routes:
            found.append((len(next(iter(routes))[1]), routes))
    nearest = [routes for steps, routes in found if steps == min(steps for steps, _ in found)]
    if len(nearest) != 1 or len(nearest[0]) != 1:
        return None
    name, steps = next(iter(nearest[0]))
    numbered = [int(n[1:]) for n in every_name if re.fullmatch(r"t\d+", n)]
    step_names = [f"T{max(numbered) + k}" if numbered else table for k, (_, table, _) in enumerate(steps, 1)]
    if any(step_name.lower() in every_name for step_name in step_names):
        return None
    new_name = step_names[-1]
    out = [token.text for token in tokens]
    if alias is not None:
        for i in uses:
            out[i] = new_name
    # a bare name that one table of the SELECT has, and a joined table too, gets its table
    owner_of = {c: written[n] for n, table in tables.items() if table for c in database.columns(table)
                if sum(c in database.columns(other) for other in tables.values() if other) == 1}
    joined_columns = {c for _, table, _ in steps for c in database.columns(table)}
    for i in _bare_names(tokens, words, scope_of, scope, joined_columns & owner_of.keys()):
        out[i] = f"{owner_of[tokens[i].low]}.{tokens[i].text}"
    end = _end_of_from(tokens, from_token)
    join, previous = "", written[name]
    for (key, table, table_key), step_name in zip(steps, step_names):
        as_name = "" if step_name == table else f" AS {step_name}"
        join += f" JOIN {table}{as_name} ON {previous}.{key} = {step_name}.{table_key}"
        previous = step_name
    head, tail = "".join(out[:end]).rstrip(), "".join(out[end:])
    tail = tail.lstrip()
    return head + join + (" " if tail[:1].isalnum() else "") + tail, f"{new_name}.{column}"


def _bare_names(tokens: list, words: list[int], scope_of: list[int], scope: int, names: set[str]) -> list[int]:
    """The tokens of one SELECT that are names, not after a dot, among `names` (lower-cased):
    not a function, a qualifier, a table or an alias."""
    found = []
    for position, i in enumerate(words):
        token = tokens[i]
        if scope_of[i] != scope or token.kind != "word" or token.low not in names:
            continue
        before = tokens[words[position - 1]] if position else None
        after = tokens[words[position + 1]] if position + 1 < len(words) else None
        if (before is None or (before.text != "." and before.low not in ("from", "join", "as"))) and \
                (after is None or after.text not in ("(", ".")):
            found.append(i)
    return found


def _end_of_from(tokens: list, from_token: int) -> int:
    """The token after the FROM clause that starts at from_token (its joins included): a WHERE,
    GROUP, ORDER, LIMIT, HAVING or set operation of the same SELECT, the parenthesis that closes
    it, a semicolon, or the end."""
    depth = 0
    for j in range(from_token + 1, len(tokens)):
        token = tokens[j]
        depth += (token.text == "(") - (token.text == ")")
        if depth < 0 or token.text == ";" or (depth == 0 and token.kind == "word" and token.low in _CLAUSE_ENDS):
            return j
    return len(tokens)


def _in_join_condition(sql: str, alias: str, column: str) -> bool:
    """True where `alias.column` is a side of a join condition (`ON T1.a = alias.column`)."""
    reference = rf"{re.escape(alias)}\s*\.\s*{re.escape(column)}"
    return re.search(rf"\bon\s+(?:{reference}\s*=|[\w.]+\s*=\s*{reference}\b)", sql, re.IGNORECASE) is not None


def _key_routes(database: ReadOnlyDatabase, tables: dict[str, str], target: str) -> set[tuple[str, tuple]]:
    """The ways to join target to a table of a SELECT (tables: name or alias -> table, "" for
    none) by foreign keys: directly, else through one table that the SELECT lacks. Each is the
    name in the SELECT it starts from and its steps, (key, table joined, that table's key)."""
    direct = {(name, ((own, target, other),)) for name, table in tables.items() if table
              for own, other in _key_pairs(database, table, target)}
    if direct:
        return direct
    in_select = {table.lower() for table in tables.values()}
    return {(name, ((own, middle, middle_own), (middle_other, target, other)))
            for name, table in tables.items() if table
            for middle in database.tables() if middle.lower() not in in_select and middle != target
            for own, middle_own in _key_pairs(database, table, middle)
            for middle_other, other in _key_pairs(database, middle, target)}


def _key_pairs(database: ReadOnlyDatabase, table: str, other: str) -> list[tuple[str, str]]:
    """(column of table, column of other) for each foreign key between the two tables."""
    pairs = []
    for source, column, target, target_column in database.foreign_keys():
        if source.lower() == table.lower() and target.lower() == other.lower():
            pairs.append((column, target_column))
        elif source.lower() == other.lower() and target.lower() == table.lower():
            pairs.append((target_column, column))
    return pairs


def _select_scopes(tokens: list) -> list[int]:
    """For each token, the SELECT it belongs to: 0 for the outermost, a new number for each
    subquery and for each part of a UNION, INTERSECT or EXCEPT."""
    scope_of, stack = [], []
    current = count = 0
    after_paren = False
    for token in tokens:
        if token.kind == "word" and token.low == "select" and after_paren:
            count += 1
            current = count
        elif token.kind == "word" and token.low in ("union", "intersect", "except"):
            count += 1
            current = count
        if token.text == "(":
            stack.append(current)
        elif token.text == ")" and stack:
            current = stack.pop()
        scope_of.append(current)
        if token.kind not in ("space", "comment"):
            after_paren = token.text == "("
    return scope_of


def _rename(sql: str, qualifier: str | None, name: str, new_name: str, new_qualifier: str | None = None) -> str:
    """sql with the bare word `name` (qualifier None: wherever it is not written after a dot) or
    `qualifier.name` written as new_name (and new_qualifier); strings are left alone."""
    tokens = tokenize(sql)
    words = [i for i, token in enumerate(tokens) if token.kind not in ("space", "comment")]
    out = [token.text for token in tokens]
    for i, qualifier_index in _references(tokens, words, qualifier, name):
        out[i] = new_name
        if qualifier_index is not None and new_qualifier is not None:
            out[qualifier_index] = new_qualifier
    return "".join(out)


def _references(tokens: list, words: list[int], qualifier: str | None, name: str) -> list[tuple[int, int | None]]:
    """Where `name` is written bare (qualifier None: not after a dot) or as `qualifier.name`: the
    index of each such name token, and of its qualifier's token (None when bare). words: the
    indices of the tokens that are not space or comments."""
    found = []
    for position, i in enumerate(words):
        if tokens[i].kind != "word" or tokens[i].low != name.lower():
            continue
        after_dot = position >= 2 and tokens[words[position - 1]].text == "."
        if qualifier is None and not after_dot:
            found.append((i, None))
        elif qualifier is not None and after_dot and tokens[words[position - 2]].low == qualifier.lower():
            found.append((i, words[position - 2]))
    return found


def _name_key(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "")


def similar_name(name: str, options: Sequence[str], min_ratio: float = 0.5) -> str | None:
    """The one option that `name` most resembles, ignoring case and underscores: the same
    letters, else the same but for a plural s, else one containing the other (4 letters or
    more), else a difflib ratio of at least min_ratio. None where no option resembles it or two
    resemble it equally."""
    key = _name_key(name)
    if not key:
        return None
    best: list[tuple[tuple[int, float], str]] = []
    for option in dict.fromkeys(options):
        other = _name_key(option)
        ratio = SequenceMatcher(None, key, other).ratio()
        if other == key:
            tier = 4
        elif other.rstrip("s") == key.rstrip("s"):
            tier = 3
        elif min(len(key), len(other)) >= 4 and (key in other or other in key):
            tier = 2
        elif ratio >= min_ratio:
            tier = 1
        else:
            continue
        best.append(((tier, ratio), option))
    if not best:
        return None
    best.sort(key=lambda item: item[0], reverse=True)
    if len(best) > 1 and best[1][0] == best[0][0]:
        return None
    return best[0][1]


def choose_sql(questions: Sequence[dict], candidates: Sequence[Sequence[str]], db_dir: str | Path, *,
               extract: Callable[[str], str] | None = None, repair: bool = True,
               timeout: float = 2.0) -> list[Choice]:
    """What the predict stage keeps for each question (a dict with "db_id"): `choose_runnable`
    on the question's main database, for a single candidate too (it may need repairing). A
    question whose database is missing keeps its first candidate as it is."""
    def choose(sqls, database):
        if database is None:
            return Choice(0, sqls[0] if sqls else "", False)
        return choose_runnable(sqls, database, timeout, repair=repair)

    return _on_main_databases(questions, candidates, db_dir, extract, choose)


def choose_candidates(
    questions: Sequence[dict],
    candidates: Sequence[Sequence[str]],
    db_dir: str | Path,
    rule: Callable[[list[str], ReadOnlyDatabase], int] = first_runnable,
    *,
    extract: Callable[[str], str] | None = None,
) -> list[int]:
    """For each question (a dict with "db_id"), the index of the candidate to keep.

    rule picks among one question's SQL candidates, given the question's main database
    (``database_files(db_dir, db_id)[0]``); a question whose database is missing keeps 0, and
    when no question has more than one candidate no database is opened.  extract turns a
    candidate into the SQL to run (the predict stage passes ``prompts.extract_sql``, its
    candidates being raw generations); None: the candidates are SQL already.
    """
    if all(len(texts) <= 1 for texts in candidates):
        return [0] * len(questions)
    return _on_main_databases(questions, candidates, db_dir, extract,
                              lambda sqls, database: 0 if database is None else rule(sqls, database))


def _on_main_databases(questions, candidates, db_dir, extract, choose) -> list:
    """choose(sqls, database) for each question: its candidates as SQL, and its main database
    (None where the file is missing)."""
    chosen = []
    with DatabaseCache() as databases:
        for question, texts in zip(questions, candidates):
            files = database_files(db_dir, question["db_id"])
            sqls = [extract(text) for text in texts] if extract is not None else list(texts)
            chosen.append(choose(sqls, databases.get(files[0]) if files else None))
    return chosen
