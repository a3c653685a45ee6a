"""Which server a row came from (seed-spec §7.3).

Order: LOGDB_SERVER_ID, then `<base>/.server_id`, then a new UUID4 stored there, then (when
the file cannot be written) uuid5(hostname, env). A gateway record's own `server_id` field
wins over all of these at ingest time.
"""

from __future__ import annotations

import socket
import time
import uuid

from aiproxy.logstore.partitions import SERVER_ID_FILE
from aiproxy.logstore.settings import LogStoreSettings


def resolve_server_id(settings: LogStoreSettings) -> str:
    if settings.server_id:
        return settings.server_id
    path = settings.base / SERVER_ID_FILE
    try:
        existing = path.read_text(encoding="utf-8").strip()
        if existing:
            return existing
    except OSError:
        pass
    new_id = str(uuid.uuid4())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new_id + "\n", encoding="utf-8")
        return new_id
    except OSError:
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"ai-proxy|{socket.gethostname()}|{settings.env or 'dev'}"))


def server_row(server_id: str, settings: LogStoreSettings) -> tuple[str, str, str, int]:
    return (server_id, socket.gethostname(), settings.env or "dev", int(time.time()))

