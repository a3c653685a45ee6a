"""Peewee models: the schema of every log store file (partitions, control DB, merged files).

Table and column names are the seed's (`servers`, `requests`, `ingest_sources`,
`request_text_index`), so its SQL keeps working; columns after the seed's are additions.
Models are unbound: callers pass the database explicitly (`query.execute(db)`,
`Database.bind_ctx`) because one process reads many partition files from many threads.
"""

from __future__ import annotations

from peewee import CompositeKey, FloatField, IntegerField, Model, ModelIndex, TextField
from playhouse.sqlite_ext import FTS5Model, SearchField


class _Base(Model):
    class Meta:
        database = None
        legacy_table_names = False


class Server(_Base):
    server_id = TextField(primary_key=True)
    hostname = TextField(null=True)
    env = TextField(null=True)
    first_seen_ts = IntegerField(null=True)

    class Meta:
        table_name = "servers"


class Request(_Base):
    # --- the seed's columns, in the seed's order ---
    request_id = TextField()
    server_id = TextField()
    ts = IntegerField()  # epoch seconds, UTC
    endpoint = TextField()
    model_original = TextField(null=True)
    model_mapped = TextField(null=True)
    status_code = IntegerField(null=True)
    latency_ms = FloatField(null=True)
    api_key_hash = TextField(null=True)
    request_json = TextField()
    response_json = TextField()
    dialog_id = TextField(null=True)
    # --- schema v1 additions (the gateway's request log record) ---
    ts_iso = TextField(null=True)  # the record's own timestamp string, µs precision
    provider = TextField(null=True)
    transport = TextField(null=True)
    stream = IntegerField(null=True)
    ttft_ms = FloatField(null=True)
    prompt_tokens = IntegerField(null=True)
    completion_tokens = IntegerField(null=True)
    total_tokens = IntegerField(null=True)
    finish_reason = TextField(null=True)
    error = TextField(null=True)  # JSON object {message,type,code} or NULL
    # Dialog threading (aiproxy.logstore.fragments.thread_hashes): the conversation this
    # request continues and the one its answer leads to, over the whole history and over the
    # last exchange only (for clients that trim history).
    thread_prefix_hash = TextField(null=True)
    thread_next_hash = TextField(null=True)
    thread_tail_prefix_hash = TextField(null=True)
    thread_tail_next_hash = TextField(null=True)
    dialog_parent_id = TextField(null=True)

    class Meta:
        table_name = "requests"
        primary_key = CompositeKey("request_id", "server_id")


class IngestSource(_Base):
    source_path = TextField(primary_key=True)
    sha256 = TextField(null=True)  # SHA-256 of the file's first `hashed_bytes` bytes
    bytes_ingested = IntegerField(null=True)
    mtime = IntegerField(null=True)
    last_scan_ts = IntegerField(null=True)
    # --- additions ---
    hashed_bytes = IntegerField(null=True)
    lines_ingested = IntegerField(null=True)
    records_corrupt = IntegerField(null=True)

    class Meta:
        table_name = "ingest_sources"


class RequestTextIndex(FTS5Model):
    request_id = SearchField(unindexed=True)
    role = SearchField()
    content = SearchField()
    endpoint = SearchField()
    model_original = SearchField()
    model_mapped = SearchField()

    class Meta:
        database = None
        table_name = "request_text_index"
        options = {"tokenize": "unicode61"}


class BuildingTextIndex(RequestTextIndex):
    """The index `logdb fts build|rebuild` fills beside a partition's rows, renamed to request_text_index
    once it holds them all (fts.py): searches never take a part of the rows for all of them."""

    class Meta:
        table_name = "request_text_index_building"


# The index's columns by name (request_id is stored, not indexed), for query checks and filters.
FTS_COLUMNS = tuple(f.column_name for f in RequestTextIndex._meta.sorted_fields if f.column_name != "rowid")

# The seed's index names, plus what search filters and dialog threading look up.
REQUEST_INDEXES = {
    "idx_requests_ts": ("ts",),
    "idx_requests_endpoint": ("endpoint",),
    "idx_requests_status": ("status_code",),
    "idx_requests_model_orig": ("model_original",),
    "idx_requests_model_mapped": ("model_mapped",),
    "idx_requests_api": ("api_key_hash",),
    "idx_requests_dialog": ("dialog_id",),
    "idx_requests_thread_next": ("thread_next_hash",),
    "idx_requests_thread_tail_next": ("thread_tail_next_hash",),
    "idx_requests_dialog_parent": ("dialog_parent_id",),
}
for _name, _columns in REQUEST_INDEXES.items():
    Request.add_index(ModelIndex(Request, [getattr(Request, c) for c in _columns], name=_name, safe=True))

BASE_MODELS = (Server, Request, IngestSource)
