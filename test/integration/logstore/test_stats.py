"""`stats` on a live store: sizes are what the files take on disk."""

import sqlite3

from aiproxy.logstore.queries import stats
from aiproxy.testing.bundles import filled_store


def test_bytes_include_a_live_partition_wal(tmp_path):
    store = filled_store(tmp_path / "a", days=1)
    path = store.existing()[0].path
    writer = sqlite3.connect(path)
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")  # the new rows stay in the -wal file
        writer.execute("INSERT INTO requests (request_id, server_id, ts, endpoint, request_json, response_json)"
                       " SELECT request_id || '-copy', server_id, ts, endpoint, request_json, response_json FROM requests")
        writer.commit()
        reported = stats(store)["bytes"]
        on_disk = sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))
        assert reported == on_disk > path.stat().st_size
    finally:
        writer.close()
        store.close()
