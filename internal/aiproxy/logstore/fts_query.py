"""Accept the FTS3/4 proximity form `a NEAR/N b` (and `a NEAR b`) that the seed's README
shows, by rewriting it into FTS5's `NEAR(a b, N)`: FTS5 itself rejects `NEAR/N`. Everything
else is passed through as FTS5 syntax; text inside double quotes is never touched."""

from __future__ import annotations

import re

_OPERAND = r'(?:"(?:[^"]|"")*"|[^\s()"]+)'
# A NEAR pair, or else a whole quoted phrase (consumed so that its inside is never rewritten).
_NEAR = re.compile(rf'({_OPERAND})\s+NEAR(?:/(\d+))?\s+({_OPERAND})|"(?:[^"]|"")*"')


def to_fts5(query: str) -> str:
    def rewrite(m: re.Match) -> str:
        left, distance, right = m.group(1), m.group(2), m.group(3)
        if left is None or left.startswith("NEAR(") or left.upper() in ("AND", "OR", "NOT"):
            return m.group(0)
        return f"NEAR({left} {right}, {distance})" if distance else f"NEAR({left} {right})"

    return _NEAR.sub(rewrite, query)
