"""Fixed-length IN lists. Every IN list has IN_CHUNK placeholders, padded with NULLs (which
match nothing), so each connection prepares one statement instead of one per list length:
sqlite3 caches prepared statements per connection, and a process holds many connections."""

from __future__ import annotations

IN_CHUNK = 500
IN_LIST = "(" + ", ".join("?" * IN_CHUNK) + ")"


def padded(values: list) -> list:
    """`values` (at most IN_CHUNK) filled up to IN_CHUNK parameters."""
    return [*values, *[None] * (IN_CHUNK - len(values))]
