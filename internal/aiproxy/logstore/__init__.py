"""The log store: date-partitioned SQLite files with FTS5, fed from the gateway's request logs.

Modules, one job each: settings (LOGDB_*), models/database (schema, pragmas, migrations),
partitions (file layout), store (open files), readers/records/checkpoints/writer/ingest
(ingestion), fts (index maintenance), search, dialogs, queries, merge, live (background ingest).
"""
