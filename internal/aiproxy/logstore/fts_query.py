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
Text inside double quotes is never touched.
"""

from __future__ import annotations

import re

from aiproxy.logstore.models import FTS_COLUMNS

# A `-` that starts a token and touches a phrase or a group negates it (its own token: "NOT ").
_TOKEN = re.compile(r'"(?:[^"]|"")*"?|(?P<negate>-(?=["(]))|[(),]|[^\s(),"]+')
_BAREWORD = re.compile(r"\^?\w+\*?")
_KEEP = re.compile(r"AND|OR|NOT|NEAR(?:/\d+)?|\+|\*|.*[{}].*")  # `*` alone stays an error
# Only the index's own columns: `https://…` or `note:` in pasted text is text. A filter alone
# (`content:` before a phrase or a group) stays as it is.
_COLUMN_FILTER = re.compile(rf"(-?(?:{'|'.join(c for c in FTS_COLUMNS if c != 'request_id')}):)(.*)", re.IGNORECASE)

_OPERAND = r'(?:"(?:[^"]|"")*"\*?|[^\s()"]+)'
# A NEAR pair, or else a whole quoted phrase (consumed so that its inside is never rewritten).
_NEAR = re.compile(rf'({_OPERAND})\s+NEAR(?:/(\d+))?\s+({_OPERAND})|"(?:[^"]|"")*"')


def _term(token: str) -> str:
    if token.startswith('"') or token in "()," or _KEEP.fullmatch(token) or _BAREWORD.fullmatch(token):
        return token
    column = _COLUMN_FILTER.fullmatch(token)
    if column:
        return column.group(1) + (_term(column.group(2)) if column.group(2) else "")
    if token.startswith("-") and len(token) > 1:  # `-word` excludes, as search boxes do: FTS5's binary NOT
        return "NOT " + _term(token[1:])
    prefix = token.endswith("*")
    phrase = token[:-1] if prefix else token
    return '"' + phrase.replace('"', '""') + '"' + ("*" if prefix else "")


def _near(m: re.Match) -> str:
    left, distance, right = m.group(1), m.group(2), m.group(3)
    if left is None or left.startswith("NEAR(") or left.upper() in ("AND", "OR", "NOT"):
        return m.group(0)
    return f"NEAR({left} {right}, {distance})" if distance else f"NEAR({left} {right})"


def _token(m: re.Match) -> str:
    return "NOT " if m.group("negate") else _term(m.group(0))


def to_fts5(query: str) -> str:
    return _NEAR.sub(_near, _TOKEN.sub(_token, query))
