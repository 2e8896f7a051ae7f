"""The SQL tokenizer that the evaluator, its safety guard and the hardness rules share.

A regular expression splits any text into tokens whose texts join back into the text (nothing is
dropped, nothing fails): whitespace, comments, '...' strings, "..." quoted names or strings,
`...` and [...] names, numbers, words, operators and punctuation.  It knows SQLite's lexical
classes, not its grammar: what a word means is left to the callers (sql.sandbox.statement_problem,
plugvalue, hardness).

The reference evaluator tokenizes with sqlparse for plug-value; on the 9,693 gold queries of
Spider's train and dev sets both give the same literal slots except where sqlparse's regexes
misread names (a column ``f1`` counts as a number) or glue a minus sign to a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Token", "tokenize", "significant"]

_TOKEN_PATTERN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'[^']*(?:''[^']*)*'?)
  | (?P<quoted>"[^"]*(?:""[^"]*)*"?)
  | (?P<ident>`[^`]*(?:``[^`]*)*`?|\[[^\]]*\]?)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[^\W\d][\w$]*)
  | (?P<op><>|!=|>=|<=|==|\|\||<<|>>|[-+*/%<>=~&|!])
  | (?P<punct>[(),;.])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    """One lexical piece of SQL text; joining the texts of all tokens gives the text back.

    kind is one of: space, comment, string ('...'), quoted ("..." which Spider uses for string
    values; SQLite reads it as a name when such a column exists), ident (`...` or [...]),
    number, word (keyword or bare name), op, punct, other.
    """

    kind: str
    text: str

    @property
    def low(self) -> str:
        return self.text.lower()

    @property
    def is_literal(self) -> bool:
        return self.kind in ("string", "quoted", "number")


def tokenize(sql: str) -> list[Token]:
    """Every token of sql, whitespace and comments included, in order."""
    return [Token(match.lastgroup, match.group()) for match in _TOKEN_PATTERN.finditer(sql)]


def significant(tokens: list[Token]) -> list[Token]:
    return [token for token in tokens if token.kind not in ("space", "comment")]
