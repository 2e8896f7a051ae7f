"""Plug the gold query's values into a prediction, best guesses first, with a bound.

The reference evaluator (test-suite-sql-eval, ``--plug_value``) treats every literal of the
prediction (string or number) as a slot and tries every assignment of the gold query's
distinct literals to the slots: ``len(gold_values) ** len(slots)`` queries, which explodes.
Here the same assignments are ordered so that the likely ones come first, and at most
``limit`` distinct queries are produced:

1. each slot ranks the gold values: the same text first, then values of the same type (string
   or number) before the others, then the most similar (for strings) or nearest (for numbers),
   then the one at the same position among values of that type;
2. assignments come in order of the sum of their slots' ranks (best-first over the product),
   so the first one is every slot's favourite, then all that change one slot by one step, ...;
3. assignments that give a query text already produced are skipped.

A prediction that matches under some assignment beyond the limit is judged wrong here and right
by the reference; ``PlugSearch.capped`` tells when that could have happened.
"""

from __future__ import annotations

import difflib
import heapq
import math
from dataclasses import dataclass
from typing import Iterator

from ..sql.tokens import Token, tokenize

DEFAULT_LIMIT = 100
# Predictions with more slots than this get no substitutions (only the written query counts).
MAX_SLOTS = 32


def value_kind(token: Token) -> str:
    return "number" if token.kind == "number" else "string"


def gold_values(sql: str) -> list[Token]:
    """The gold query's distinct literals (by text), in order of first appearance."""
    seen: dict[str, Token] = {}
    for token in tokenize(sql):
        if token.is_literal and token.text not in seen:
            seen[token.text] = token
    return list(seen.values())


@dataclass
class PlugSearch:
    """The prediction rewritten with gold values, lazily; iterate to get the query texts.

    The written prediction itself is not among them (the caller tries it first).
    """

    gold_sql: str
    pred_sql: str
    limit: int = DEFAULT_LIMIT
    produced: int = 0
    capped: bool = False

    def __post_init__(self) -> None:
        self._tokens = tokenize(self.pred_sql)
        self._slots = [index for index, token in enumerate(self._tokens) if token.is_literal]
        self._values = gold_values(self.gold_sql)

    @property
    def possible(self) -> bool:
        """True when there is at least one substitution to try."""
        return bool(self._slots and self._values)

    @property
    def space(self) -> int:
        """How many assignments the reference would try (gold values ** slots)."""
        return len(self._values) ** len(self._slots) if self.possible else 0

    def __iter__(self) -> Iterator[str]:
        if not self.possible:
            return
        if len(self._slots) > MAX_SLOTS:
            self.capped = True
            return
        choices = [self._ranked_values(position) for position in range(len(self._slots))]
        seen = {self.pred_sql}
        # each assignment is a tuple of ranks, one per slot; it has one parent (lower the last
        # non-zero rank by one), so best-first search needs no visited set
        start = (0,) * len(self._slots)
        heap: list[tuple[int, tuple[int, ...]]] = [(0, start)]
        examined = 0
        while heap:
            if self.produced >= self.limit or examined >= 20 * self.limit:
                self.capped = True
                return
            cost, ranks = heapq.heappop(heap)
            examined += 1
            last_nonzero = max((i for i, rank in enumerate(ranks) if rank), default=0)
            for slot in range(last_nonzero, len(ranks)):
                if ranks[slot] + 1 < len(choices[slot]):
                    child = ranks[:slot] + (ranks[slot] + 1,) + ranks[slot + 1 :]
                    heapq.heappush(heap, (cost + 1, child))
            text = self._render(choices, ranks)
            if text in seen:
                continue
            seen.add(text)
            self.produced += 1
            yield text

    def _render(self, choices: list[list[Token]], ranks: tuple[int, ...]) -> str:
        texts = [token.text for token in self._tokens]
        for position, rank in enumerate(ranks):
            texts[self._slots[position]] = choices[position][rank].text
        return "".join(texts)

    def _ranked_values(self, position: int) -> list[Token]:
        slot = self._tokens[self._slots[position]]
        kind = value_kind(slot)
        same_kind_slots = [i for i in self._slots if value_kind(self._tokens[i]) == kind]
        ordinal = same_kind_slots.index(self._slots[position])
        same_kind_values = [value for value in self._values if value_kind(value) == kind]

        def preference(value: Token) -> tuple:
            same_kind = value_kind(value) == kind
            value_ordinal = same_kind_values.index(value) if same_kind else len(self._values)
            return (
                value.text != slot.text,
                _content(value) != _content(slot),
                not same_kind,
                -_similarity(slot, value) if same_kind else 0.0,
                abs(value_ordinal - ordinal),
            )

        return sorted(self._values, key=preference)


def _content(token: Token) -> str:
    """A literal's value as text: strings without their quotes, case folded."""
    if token.kind in ("string", "quoted"):
        return token.text[1:-1].casefold()
    return token.text


def _similarity(slot: Token, value: Token) -> float:
    if slot.kind == "number":
        try:
            a, b = float(slot.text), float(value.text)
        except ValueError:
            return 0.0
        distance = abs(a - b)
        return 1.0 / (1.0 + distance) if math.isfinite(distance) else 0.0
    # long literals are cut: the ratio costs time quadratic in the length
    return difflib.SequenceMatcher(None, _content(slot)[:200], _content(value)[:200]).ratio()
