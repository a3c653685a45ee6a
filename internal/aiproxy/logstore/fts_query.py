"""From what a user types to an FTS5 query.

- A term with punctuation (`gpt-4`, `what's`, `file.py`, `C++`) is searched as the phrase it spells
  (`"gpt-4"`), where FTS5 would reject it (`no such column: 4`). Quoted phrases, parentheses,
  operators (AND, OR, NOT, NEAR, `+`), prefixes (`term*`, `^term`), column filters on the index's
  indexed columns, in any case (`role:user`, `-Role:user`), and column sets (`{a b}:`) keep their FTS5 meaning.
- `-word`, `-"a phrase"` and `-(a group)` exclude what follows the `-` (`alpha -banana` is FTS5's
  `alpha NOT banana`, `France -(Germany OR Japan)` is `France NOT (Germany OR Japan)`). A `-`
  inside a word (`gpt-4`) is part of the word; `-column:` keeps FTS5's meaning (other columns).
- The FTS3/4 proximity form `a NEAR/N b` (and `a NEAR b`) that the seed's README shows becomes
  FTS5's `NEAR(a b, N)`: FTS5 itself rejects `NEAR/N`.
- A comma outside `NEAR(…)` separates words (`paris, france`), as in the text searched.
- Characters of Chinese, Japanese, Korean, Thai, Lao, Khmer and Burmese are each a word of their
  own, as they are indexed (unspaced.py): `数据库` is the phrase of its three characters, found
  wherever the run occurs.
Text inside double quotes is never touched otherwise.

And back from an FTS5 query to the phrases and NEAR groups its bm25 adds up (`scored_parts`),
so that search can rank partitions with IDF over all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiproxy.logstore.models import FTS_COLUMNS
from aiproxy.logstore.unspaced import MARKS, split_unspaced

# A `-` that starts a token and touches a phrase or a group negates it (its own token: "NOT ").
_TOKEN = re.compile(r'"(?:[^"]|"")*"?|(?P<negate>-(?=["(]))|[(),]|[^\s(),"]+')
_BAREWORD = re.compile(rf"\^?[\w{MARKS}]+\*?")  # a Thai or Khmer word has marks, which are not \w
_KEEP = re.compile(r"AND|OR|NOT|NEAR(?:/\d+)?|\+|\*|.*[{}].*")  # `*` alone stays an error
# Only the index's own columns: `https://…` or `note:` in pasted text is text. A filter alone
# (`content:` before a phrase or a group) stays as it is.
_COLUMN_FILTER = re.compile(rf"(-?(?:{'|'.join(c for c in FTS_COLUMNS if c != 'request_id')}):)(.*)", re.IGNORECASE)

_OPERAND = r'(?:"(?:[^"]|"")*"\*?|[^\s()"]+)'
# A NEAR pair, or else a whole quoted phrase (consumed so that its inside is never rewritten). An
# operand starts a token (or follows `col:`): tried inside a 10,000-character word, each position
# backtracked over the rest of it (2 s of CPU for one query).
_NEAR = re.compile(rf'(?<![^\s():])({_OPERAND})\s+NEAR(?:/(\d+))?\s+({_OPERAND})|"(?:[^"]|"")*"')


def _term(token: str) -> str:
    # A loop, not a call per `-` or `col:`: a token of a thousand of them is a bad query, not a RecursionError.
    head = ""
    while True:
        if token.startswith('"') or token in "()," or _KEEP.fullmatch(token) or _BAREWORD.fullmatch(token):
            return head + token
        column = _COLUMN_FILTER.fullmatch(token)
        if column:
            head, token = head + column.group(1), column.group(2)
            if not token:
                return head
        elif token.startswith("-") and len(token) > 1:  # `-word` excludes, as search boxes do: FTS5's binary NOT
            head, token = head + "NOT ", token[1:]
        else:
            break
    prefix = token.endswith("*")
    phrase = token[:-1] if prefix else token
    return head + '"' + phrase.replace('"', '""') + '"' + ("*" if prefix else "")


def _near(m: re.Match) -> str:
    left, distance, right = m.group(1), m.group(2), m.group(3)
    if left is None or left.startswith("NEAR(") or left.upper() in ("AND", "OR", "NOT"):
        return m.group(0)
    return f"NEAR({left} {right}, {distance})" if distance else f"NEAR({left} {right})"


class _Rewriter:
    """_term per token, tracking parentheses: a comma is NEAR's separator inside `NEAR(…)` and, anywhere
    else, punctuation between words (`paris, france`), which FTS5 would reject as a syntax error."""

    def __init__(self) -> None:
        self.near_groups: list[bool] = []  # per open parenthesis: whether it opened NEAR(
        self.previous = ""

    def __call__(self, m: re.Match) -> str:
        token = m.group(0)
        if m.group("negate"):
            out = "NOT "
        elif token == "(":
            self.near_groups.append(self.previous == "NEAR")
            out = token
        elif token == ")":
            if self.near_groups:
                self.near_groups.pop()
            out = token
        elif token == ",":
            out = token if self.near_groups and self.near_groups[-1] else " "
        else:
            out = _term(token)
        self.previous = token
        return out


def to_fts5(query: str) -> str:
    return split_unspaced(_NEAR.sub(_near, _TOKEN.sub(_Rewriter(), query)))


# --- A query's scored parts, for bm25 with statistics over several partitions (search.py) ---
#
# FTS5's bm25 of a fragment is a sum over the query's phrases: IDF(phrase) times a term-frequency
# part. A phrase adds to it only where FTS5 has it "at" the row: it matches there and so does
# every OR operand it sits in (an operand that does not match the row was stepped past it; the
# right side of NOT never matches a result). A NEAR group counts only its instances inside the
# window, so it is kept whole.


class QueryShapeError(ValueError):
    """A query the parser below does not take apart (it is then ranked per partition)."""


@dataclass(frozen=True, slots=True)
class ScoredPart:
    """A phrase or a NEAR group that adds to a query's bm25.

    `query` matches it alone (its column filter included); `phrases` are its phrases in the
    same form, whose fragment counts give FTS5's IDF; `guards` are the OR operands it sits in,
    each of which a fragment must match for this part to count there."""

    query: str
    phrases: tuple[str, ...]
    guards: tuple[str, ...] = ()


_ALL_COLUMNS = frozenset(c.lower() for c in FTS_COLUMNS)
_OPERATORS = frozenset({"AND", "OR", "NOT"})
_PUNCTUATION = frozenset("(){}:,+*-^")


def _is_bareword_char(ch: str) -> bool:
    """FTS5's bareword characters: ASCII letters, digits, `_`, U+001A and everything non-ASCII."""
    return ch == "_" or ch == "\x1a" or not ch.isascii() or ch.isalnum()


def _lex(query: str) -> list[tuple[str, str, int, int]]:
    """(kind, text, start, end) per token, as FTS5's own tokenizer splits a query."""
    tokens, i = [], 0
    while i < len(query):
        ch = query[i]
        if ch in " \t\n\r\f\v":
            i += 1
        elif ch in _PUNCTUATION:
            tokens.append((ch, ch, i, i + 1))
            i += 1
        elif ch == '"':
            end = i + 1
            while True:
                end = query.find('"', end)
                if end < 0:
                    raise QueryShapeError("unterminated string")
                if query.startswith('""', end):
                    end += 2
                    continue
                break
            tokens.append(("STRING", query[i : end + 1], i, end + 1))
            i = end + 1
        elif _is_bareword_char(ch):
            end = i
            while end < len(query) and _is_bareword_char(query[end]):
                end += 1
            word = query[i:end]
            tokens.append((word if word in _OPERATORS else "STRING", word, i, end))
            i = end
        else:
            raise QueryShapeError(f"unexpected {ch!r}")
    return tokens


def _columns_text(columns: frozenset[str] | None, text: str) -> str:
    return text if columns is None else "{" + " ".join(sorted(columns)) + "} : " + text


@dataclass(frozen=True, slots=True)
class _Unit:
    text: str  # the phrase (with ^) or the NEAR group
    phrases: tuple[str, ...]
    columns: frozenset[str] | None  # None: every column

    def restricted(self, columns: frozenset[str]) -> _Unit:
        within = columns if self.columns is None else self.columns & columns
        if not within:  # FTS5 matches nothing there; a filter of no column has no syntax
            raise QueryShapeError("a column filter leaves no column")
        return _Unit(self.text, self.phrases, None if within == _ALL_COLUMNS else within)

    def fts5(self) -> str:
        return _columns_text(self.columns, self.text)


@dataclass(frozen=True, slots=True)
class _Node:
    op: str  # AND, OR, NOT (children: left, right)
    children: tuple[_Node | _Unit, ...]


def _restrict(node: _Node | _Unit, columns: frozenset[str]) -> _Node | _Unit:
    if isinstance(node, _Unit):
        return node.restricted(columns)
    return _Node(node.op, tuple(_restrict(child, columns) for child in node.children))


def _fts5(node: _Node | _Unit) -> str:
    if isinstance(node, _Unit):
        return node.fts5()
    return "(" + f" {node.op} ".join(_fts5(child) for child in node.children) + ")"


class _Parser:
    """FTS5's grammar (fts5parse.y): OR < AND < NOT < juxtaposition (implicit AND), column
    filters on a phrase, a NEAR group or a parenthesised expression."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = _lex(query)
        self.pos = 0

    def kind(self, ahead: int = 0) -> str | None:
        at = self.pos + ahead
        return self.tokens[at][0] if at < len(self.tokens) else None

    def take(self, kind: str) -> tuple[str, str, int, int]:
        if self.kind() != kind:
            raise QueryShapeError(f"expected {kind}")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def parse(self) -> _Node | _Unit:
        node = self.expr()
        if self.pos != len(self.tokens):
            raise QueryShapeError("unexpected token")
        return node

    def expr(self) -> _Node | _Unit:
        return self.binary("OR", lambda: self.binary("AND", lambda: self.binary("NOT", self.primary)))

    def binary(self, op: str, operand) -> _Node | _Unit:
        node = operand()
        while self.kind() == op:
            self.pos += 1
            right = operand()
            if op != "NOT" and isinstance(node, _Node) and node.op == op:
                node = _Node(op, (*node.children, right))
            else:
                node = _Node(op, (node, right))
        return node

    def colset_length(self) -> int:
        """Tokens in a column filter starting here, `:` included (0: none)."""
        at = 1 if self.kind() == "-" else 0
        if self.kind(at) == "{":
            while self.kind(at) not in ("}", None):
                at += 1
            at += 1
        elif self.kind(at) == "STRING":
            at += 1
        else:
            return 0
        return at + 1 if self.kind(at) == ":" else 0

    def colset(self) -> frozenset[str]:
        negated = self.kind() == "-"
        self.pos += negated
        names = []
        if self.kind() == "{":
            self.pos += 1
            while self.kind() == "STRING":
                names.append(self.take("STRING")[1])
            self.take("}")
        else:
            names.append(self.take("STRING")[1])
        self.take(":")
        columns = frozenset(_unquote(name).lower() for name in names)
        if not columns <= _ALL_COLUMNS:
            raise QueryShapeError("no such column")
        return _ALL_COLUMNS - columns if negated else columns

    def primary(self) -> _Node | _Unit:
        if self.kind() == "(":
            self.pos += 1
            node = self.expr()
            self.take(")")
            return node
        length = self.colset_length()
        if length and self.kind(length) == "(":
            columns = self.colset()
            self.take("(")
            node = self.expr()
            self.take(")")
            return _restrict(node, columns)
        items = [self.cnearset()]
        while self.kind() in ("STRING", "^", "-", "{"):
            items.append(self.cnearset())
        return items[0] if len(items) == 1 else _Node("AND", tuple(items))

    def cnearset(self) -> _Unit:
        columns = self.colset() if self.colset_length() else None
        unit = self.nearset()
        return unit if columns is None else unit.restricted(columns)

    def nearset(self) -> _Unit:
        start = self.tokens[self.pos][2] if self.pos < len(self.tokens) else len(self.query)
        if self.kind() == "STRING" and self.tokens[self.pos][1] == "NEAR" and self.kind(1) == "(":
            self.pos += 2
            phrases = [self.phrase()]
            while self.kind() == "STRING":
                phrases.append(self.phrase())
            if self.kind() == ",":
                self.pos += 1
                self.take("STRING")
            end = self.take(")")[3]
            return _Unit(self.query[start:end], tuple(phrases), None)
        if self.kind() == "^":  # the phrase must start the column: part of the phrase, for its IDF too
            self.pos += 1
        self.phrase()
        text = self.query[start : self.tokens[self.pos - 1][3]]
        return _Unit(text, (text,), None)

    def phrase(self) -> str:
        start = self.take("STRING")[2]
        if self.kind() == "*":
            self.pos += 1
        while self.kind() == "+":
            self.pos += 1
            self.take("STRING")
            if self.kind() == "*":
                self.pos += 1
        return self.query[start : self.tokens[self.pos - 1][3]]


def _unquote(text: str) -> str:
    return text[1:-1].replace('""', '"') if text.startswith('"') else text


def scored_parts(query: str) -> list[ScoredPart]:
    """The phrases and NEAR groups of an FTS5 query that add to its bm25 (not those on the right
    of a NOT: no result holds them), each with the OR operands it must match to count.
    Raises QueryShapeError for what this parser does not know."""
    parts: list[ScoredPart] = []

    def visit(node: _Node | _Unit, guards: tuple[str, ...]) -> None:
        if isinstance(node, _Unit):
            parts.append(ScoredPart(node.fts5(), tuple(_columns_text(node.columns, p) for p in node.phrases), guards))
        elif node.op == "NOT":
            visit(node.children[0], guards)
        else:
            for child in node.children:
                guarded = node.op == "OR" and isinstance(child, _Node)
                visit(child, (*guards, _fts5(child)) if guarded else guards)

    try:
        visit(_Parser(query).parse(), ())
    except RecursionError:  # FTS5 accepts 256 levels of parentheses; this parser fewer
        raise QueryShapeError("nested too deeply") from None
    return parts
