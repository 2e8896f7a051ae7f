"""Spider's hardness classes (easy, medium, hard, extra) from a query's structure.

The rules are those of Spider's evaluation.py (eval_hardness); this module recomputes the
parts they look at with the shared tokenizer (sql/tokens.py) and a clause-level parser, so it needs neither nltk
nor the database schema.  For one SELECT block (nested queries are not looked into):

- component 1: one each for WHERE, GROUP BY, ORDER BY and LIMIT, one per table beyond the first
  in FROM, one per OR connector and one per LIKE condition (in the ON, WHERE and HAVING clauses);
- component 2: one per subquery used as a value in an ON, WHERE or HAVING condition, plus one
  for an INTERSECT, UNION or EXCEPT;
- others: one each for "more than one aggregate", "more than one SELECT column", "more than
  one WHERE condition" and "more than one GROUP BY column".

Two quirks of the reference are kept because they decide the counts it reports: the aggregate
count includes every negated WHERE condition (NOT IN, NOT LIKE, ...), and every HAVING condition
that is negated or is an AND/OR connector; and "more than one WHERE condition" counts the
connectors too, so it is true exactly when WHERE has two conditions or more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sql.tokens import Token, significant, tokenize

AGGREGATES = frozenset({"max", "min", "count", "sum", "avg"})
SET_OPERATIONS = frozenset({"union", "intersect", "except"})
JOIN_WORDS = frozenset({"join", "natural", "left", "right", "full", "inner", "cross", "outer"})
# Words that start a new clause of a SELECT block (GROUP and ORDER are followed by BY).
CLAUSE_WORDS = frozenset({"from", "where", "group", "having", "order", "limit", "window"}) | SET_OPERATIONS


@dataclass
class Condition:
    negated: bool = False
    is_like: bool = False
    subqueries: int = 0


@dataclass
class Conditions:
    """A WHERE, HAVING or ON clause: its conditions and the AND/OR words between them."""

    items: list[Condition] = field(default_factory=list)
    connectors: list[str] = field(default_factory=list)

    def extend(self, other: Conditions) -> None:
        if self.items and other.items:
            self.connectors.append("and")
        self.items.extend(other.items)
        self.connectors.extend(other.connectors)

    @property
    def length(self) -> int:
        """The length of the reference's list: conditions and connectors together."""
        return len(self.items) + len(self.connectors)


@dataclass
class BlockShape:
    """What the hardness rules need to know about one SELECT block."""

    select_columns: int = 0
    select_aggregates: int = 0
    table_units: int = 0
    join_on: Conditions = field(default_factory=Conditions)
    where: Conditions = field(default_factory=Conditions)
    group_by_columns: int = 0
    having: Conditions = field(default_factory=Conditions)
    has_order_by: bool = False
    order_by_aggregates: int = 0
    has_limit: bool = False
    set_operation: str | None = None


# The class of a query outside the SQL that Spider's parser reads (see `outside_spider_grammar`)
NOT_RATED = "n/a"
# Spider's grammar (process_sql.py): these functions, these operators, and plain JOIN only
_SPIDER_OPERATORS = frozenset({"=", ">", "<", ">=", "<=", "!=", "+", "-", "*", "/"})
_OUTSIDE_WORDS = frozenset({"case", "glob", "regexp", "escape", "collate"})
_JOIN_KINDS = frozenset({"left", "right", "full", "inner", "cross", "natural", "outer"})
# words that may stand before "(" in Spider's SQL: a subquery, a list, a nested condition
_BEFORE_PARENTHESIS = frozenset({"select", "from", "where", "having", "on", "and", "or", "not", "in", "exists",
                                 "as", "join", "by", "union", "intersect", "except", "between", "like", "is",
                                 "distinct", "limit"})


def gold_hardness(sql: str) -> str:
    """Spider's hardness class of a gold query, or NOT_RATED where Spider's rules cannot read it."""
    return NOT_RATED if outside_spider_grammar(sql) else hardness(sql)


def outside_spider_grammar(sql: str) -> str | None:
    """What puts a query outside the SQL Spider's parser (process_sql.py) reads, or None: a
    first word other than SELECT (WITH, say), a function other than count, sum, avg, min and
    max (CAST, IIF, SUBSTR, strftime, window functions), CASE, a join other than JOIN ... ON,
    an operator other than comparisons and + - * / (||, %), a `quoted` or [bracketed] name,
    LIMIT without a plain number or with OFFSET, more than one statement. Every gold query of
    Spider's train and dev sets reads (BIRD's use CAST, CASE, IIF and `quoted names` often)."""
    tokens = significant(tokenize(sql))
    while tokens and tokens[-1].text == ";":
        tokens.pop()
    first = next((token for token in tokens if token.text != "("), None)
    if first is None or first.low != "select":
        return f"starts with {first.text.upper() if first else 'nothing'}, not SELECT"
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.kind == "word":
            if token.low in _OUTSIDE_WORDS:
                return token.low.upper()
            if token.low in _JOIN_KINDS and following is not None and following.low in ("join", "outer"):
                return f"{token.low.upper()} JOIN"
            if (following is not None and following.text == "(" and token.low not in AGGREGATES
                    and token.low not in _BEFORE_PARENTHESIS):
                return f"function {token.text}"
            if token.low == "limit" and (following is None or following.kind != "number" or (
                    index + 2 < len(tokens) and tokens[index + 2].text != ")"
                    and tokens[index + 2].low not in SET_OPERATIONS)):
                return "LIMIT other than a number"
        elif token.kind == "op" and token.text not in _SPIDER_OPERATORS:
            return f"operator {token.text}"
        elif token.kind in ("ident", "other"):
            return f"name {token.text}" if token.kind == "ident" else f"character {token.text}"
        elif token.text == ";":
            return "more than one statement"
    return None


def hardness(sql: str) -> str:
    """Spider's hardness class of a (gold) query: "easy", "medium", "hard" or "extra"."""
    shape = parse_shape(sql)
    component1 = count_component1(shape)
    component2 = count_component2(shape)
    others = count_others(shape)
    if component1 <= 1 and others == 0 and component2 == 0:
        return "easy"
    if (others <= 2 and component1 <= 1 and component2 == 0) or (
        component1 <= 2 and others < 2 and component2 == 0
    ):
        return "medium"
    if (
        (others > 2 and component1 <= 2 and component2 == 0)
        or (2 < component1 <= 3 and others <= 2 and component2 == 0)
        or (component1 <= 1 and others == 0 and component2 <= 1)
    ):
        return "hard"
    return "extra"


def count_component1(shape: BlockShape) -> int:
    count = sum(
        (
            bool(shape.where.items),
            shape.group_by_columns > 0,
            shape.has_order_by,
            shape.has_limit,
        )
    )
    count += max(shape.table_units - 1, 0)
    clauses = (shape.join_on, shape.where, shape.having)
    count += sum(clause.connectors.count("or") for clause in clauses)
    count += sum(condition.is_like for clause in clauses for condition in clause.items)
    return count


def count_component2(shape: BlockShape) -> int:
    clauses = (shape.join_on, shape.where, shape.having)
    nested = sum(condition.subqueries for clause in clauses for condition in clause.items)
    return nested + (shape.set_operation is not None)


def count_others(shape: BlockShape) -> int:
    aggregates = (
        shape.select_aggregates
        + sum(condition.negated for condition in shape.where.items)
        + shape.order_by_aggregates
        + sum(condition.negated for condition in shape.having.items)
        + len(shape.having.connectors)
    )
    return sum(
        (
            aggregates > 1,
            shape.select_columns > 1,
            shape.where.length > 1,
            shape.group_by_columns > 1,
        )
    )


def parse_shape(sql: str) -> BlockShape:
    """The shape of the outermost SELECT block of sql (best effort on SQL it does not know)."""
    tokens = significant(tokenize(sql))
    start = _skip_with_clause(tokens, 0)
    while start < len(tokens) and tokens[start].text == "(":
        start += 1
    shape, _ = _parse_block(tokens, start)
    return shape


def _skip_with_clause(tokens: list[Token], index: int) -> int:
    """Index of the main SELECT after a leading WITH name AS (...), ... list."""
    if index >= len(tokens) or tokens[index].low != "with":
        return index
    depth = 0
    for position in range(index + 1, len(tokens)):
        text = tokens[position].text
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif depth == 0 and tokens[position].low == "select":
            return position
    return len(tokens)


def _parse_block(tokens: list[Token], start: int) -> tuple[BlockShape, int]:
    """Split one SELECT block into its clauses (at parenthesis depth 0) and measure each.

    Returns the shape and the index just past the block (a closing parenthesis of an
    enclosing query, a semicolon, or the end).
    """
    clauses: dict[str, list[Token]] = {}
    current: list[Token] = []
    clauses["select"] = current
    depth = 0
    index = start + 1 if start < len(tokens) and tokens[start].low == "select" else start
    set_operation = None
    while index < len(tokens):
        token = tokens[index]
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and token.text == ";":
            break
        elif depth == 0 and token.kind == "word" and token.low in CLAUSE_WORDS:
            if token.low in SET_OPERATIONS:
                set_operation = token.low
                index += 1
                # the right-hand side is a query of its own; only its presence counts here
                while index < len(tokens) and tokens[index].low in ("all", "distinct", "("):
                    index += 1
                _, index = _parse_block(tokens, index)
                break
            name = token.low
            if name in ("group", "order") and index + 1 < len(tokens) and tokens[index + 1].low == "by":
                index += 1
            current = []
            clauses.setdefault(name, current)
            index += 1
            continue
        current.append(token)
        index += 1

    shape = BlockShape(set_operation=set_operation)
    _measure_select(clauses["select"], shape)
    if "from" in clauses:
        _measure_from(clauses["from"], shape)
    if "where" in clauses:
        shape.where = _parse_conditions(clauses["where"])
    if "group" in clauses:
        shape.group_by_columns = len(_split_top_level(clauses["group"], ","))
    if "having" in clauses:
        shape.having = _parse_conditions(clauses["having"])
    if "order" in clauses:
        shape.has_order_by = True
        shape.order_by_aggregates = sum(
            min(_count_aggregate_calls(item), 2) for item in _split_top_level(clauses["order"], ",")
        )
    shape.has_limit = "limit" in clauses
    return shape, index


def _measure_select(tokens: list[Token], shape: BlockShape) -> None:
    if tokens and tokens[0].low in ("distinct", "all"):
        tokens = tokens[1:]
    items = _split_top_level(tokens, ",")
    shape.select_columns = len(items)
    shape.select_aggregates = sum(_starts_with_aggregate(item) for item in items)


def _measure_from(tokens: list[Token], shape: BlockShape) -> None:
    """Count table units (tables or subqueries joined by JOIN or comma) and gather ON conditions."""
    units = 1 if tokens else 0
    on_clause: list[Token] | None = None
    depth = 0
    for token in tokens:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        at_top = depth == 0 and token.text not in ("(", ")")
        if at_top and (token.text == "," or token.low == "join"):
            units += 1
        if at_top and (token.text == "," or token.low in JOIN_WORDS or token.low == "using"):
            if on_clause is not None:
                shape.join_on.extend(_parse_conditions(on_clause))
                on_clause = None
            continue
        if at_top and token.low == "on":
            on_clause = []
            continue
        if on_clause is not None:
            on_clause.append(token)
    if on_clause is not None:
        shape.join_on.extend(_parse_conditions(on_clause))
    shape.table_units = units


def _parse_conditions(tokens: list[Token]) -> Conditions:
    """Conditions joined by AND/OR at depth 0; the AND of BETWEEN x AND y belongs to its condition."""
    result = Conditions()
    segment: list[Token] = []
    depth = 0
    awaiting_between_and = False
    for token in tokens:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.low == "between":
            awaiting_between_and = True
        elif depth == 0 and token.low in ("and", "or"):
            if token.low == "and" and awaiting_between_and:
                awaiting_between_and = False
            else:
                _add_condition(result, segment)
                result.connectors.append(token.low)
                segment = []
                continue
        segment.append(token)
    _add_condition(result, segment)
    return result


def _add_condition(result: Conditions, segment: list[Token]) -> None:
    if _is_wrapped(segment) and not _is_subquery(segment):
        # a parenthesised group of conditions: its conditions count one by one
        inner = _parse_conditions(segment[1:-1])
        result.items.extend(inner.items)
        result.connectors.extend(inner.connectors)
        return
    condition = Condition()
    depth = 0
    for index, token in enumerate(segment):
        if token.text == "(":
            if depth == 0 and _is_subquery_start(segment, index + 1):
                condition.subqueries += 1
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.low == "not":
            condition.negated = True
        elif depth == 0 and token.low == "like":
            condition.is_like = True
    result.items.append(condition)


def _is_wrapped(tokens: list[Token]) -> bool:
    """True when the first "(" closes at the last token: ( ... )."""
    if len(tokens) < 2 or tokens[0].text != "(" or tokens[-1].text != ")":
        return False
    depth = 0
    for index, token in enumerate(tokens):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
            if depth == 0 and index < len(tokens) - 1:
                return False
    return True


def _is_subquery(tokens: list[Token]) -> bool:
    return _is_subquery_start(tokens, 1)


def _is_subquery_start(tokens: list[Token], index: int) -> bool:
    while index < len(tokens) and tokens[index].text == "(":
        index += 1
    return index < len(tokens) and tokens[index].low in ("select", "with")


def _split_top_level(tokens: list[Token], separator: str) -> list[list[Token]]:
    if not tokens:
        return []
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.text == separator:
            parts.append([])
            continue
        parts[-1].append(token)
    return parts


def _starts_with_aggregate(item: list[Token]) -> bool:
    return len(item) > 1 and item[0].low in AGGREGATES and item[1].text == "("


def _count_aggregate_calls(item: list[Token]) -> int:
    depth = 0
    count = 0
    for index, token in enumerate(item):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif (
            depth == 0
            and token.low in AGGREGATES
            and index + 1 < len(item)
            and item[index + 1].text == "("
        ):
            count += 1
    return count
