"""Log store errors, as part of the gateway's one error tree (so REST, gRPC and the CLI map
them the same way: 400 / INVALID_ARGUMENT / exit 2, and 404 / NOT_FOUND)."""

from __future__ import annotations

from aiproxy.errors import InvalidRequest, NotFound


class InvalidQuery(InvalidRequest):
    """A search string that is not valid FTS5 syntax, or a bad filter or cursor."""

    default_code = "invalid_query"


class LogNotFound(NotFound):
    """No request or dialog with that id in the store."""
