"""The log store: date-partitioned SQLite files with FTS5, fed from the gateway's request logs.

Modules, one job each: settings (LOGDB_*), models/database (schema, pragmas, migrations),
partitions (file layout), server_identity, store (open files), readers/records/fragments/
checkpoints/writer/ingest (ingestion), fts, fts_query and unspaced (index maintenance, query syntax,
words of scripts written without spaces),
search (snippets), dialogs, queries (single requests, dialogs, stats), merge, live (background ingest),
api/protomap (LogService operations as protos), cli (logdb commands), bundles (docs/bundles.md).
"""
