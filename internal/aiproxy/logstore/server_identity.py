"""Which server a row came from (seed-spec §7.3).

Order: LOGDB_SERVER_ID, then `<base>/.server_id`, then a new UUID4 stored there, then (when
the file cannot be written) uuid5(hostname, env). A gateway record's own `server_id` field
wins over all of these at ingest time.
"""

from __future__ import annotations

import socket
import time

from aiproxy import identity
from aiproxy.logstore.settings import LogStoreSettings


def resolve_server_id(settings: LogStoreSettings) -> str:
    return identity.resolve_server_id(settings.base, settings.server_id, settings.env)


def server_row(server_id: str, settings: LogStoreSettings) -> tuple[str, str, str, int]:
    return (server_id, socket.gethostname(), settings.env or "dev", int(time.time()))

