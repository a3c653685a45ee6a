"""The LogService operations on a local store, proto in and proto out.

The gRPC servicer runs these in a worker thread; the `logdb` CLI calls them directly (or the
same RPCs on a server with --remote), so both print identical JSON.

Each operation takes an `Unreadable` (damage.py): partitions that cannot be read are left out and
noted there, and the caller reports them (the servicer in the reply's `warnings`, the CLI on
stderr). What cannot be answered without such a partition is PartitionUnreadable (DATA_LOSS).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from aiproxy.errors import GatewayError
from aiproxy.logstore import fts, queries
from aiproxy.logstore.damage import Unreadable
from aiproxy.logstore.errors import InvalidQuery, LogNotFound
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.protomap import (
    day_range,
    dialog_summary,
    filters_from_proto,
    hit_to_proto,
    record_to_proto,
    stats_to_proto,
)
from aiproxy.logstore.search import MAX_LIMIT, decode_cursor, encode_cursor, page_size, search
from aiproxy.logstore.stoppable import stop_event
from aiproxy.logstore.store import Store
from aiproxypb.v1 import logs_pb2

# A GetDialog page's bytes past its first turn: under gRPC's default 4 MiB receive limit, so a
# client that never raised it still reads every page whose turns are smaller than that.
DIALOG_PAGE_BYTES = 3 * 1024 * 1024
_FRAME_BYTES = 16  # a repeated field's tag and length prefix (at most 6), rounded up
_REPLY_HEADROOM = 1024  # next_cursor and framing around a reply checked against the limit


class AnswerTooLarge(GatewayError):
    """One stored record is larger than the server sends in one gRPC message: no page can hold
    it. RESOURCE_EXHAUSTED as gRPC itself reports a size limit; 500 over REST (the client asked
    for nothing wrong), with a message that says how to read it anyway."""

    http_status = 500
    error_type = "server_error"
    default_code = "response_too_large"

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED


class LogApi:
    """`max_message_bytes`: what the serving gRPC server sends at most in one message (None: no
    limit, as for the local CLI); a reply that would exceed it is an AnswerTooLarge instead of a
    transport failure the client cannot explain."""

    def __init__(self, store: Store, log_dir: Path, *, max_message_bytes: int | None = None) -> None:
        self.store = store
        self.log_dir = Path(log_dir)
        self.max_message_bytes = max_message_bytes
        self.page_bytes = DIALOG_PAGE_BYTES if max_message_bytes is None else min(
            DIALOG_PAGE_BYTES, max_message_bytes - _REPLY_HEADROOM
        )

    def _check_size(self, size: int, request_id: str) -> None:
        limit = self.max_message_bytes
        if limit is not None and size + _REPLY_HEADROOM > limit:
            raise AnswerTooLarge(
                f"The stored record of request {request_id!r} is {size} bytes, more than the {limit} bytes this "
                "gateway sends in one gRPC message (MAX_BODY_BYTES + 1 MiB). Read it on the gateway's host with "
                f"`logdb show {request_id} --db <LOGDB_DIR>`, which has no such limit, or raise MAX_BODY_BYTES.",
                param="request_id",
            )

    def search_requests(
        self, request: logs_pb2.SearchRequestsRequest, unreadable: Unreadable
    ) -> logs_pb2.SearchRequestsResponse:
        page = search(self.store, request.q, filters_from_proto(request.filter), limit=request.limit,
                      cursor=request.cursor, unreadable=unreadable)
        reply = logs_pb2.SearchRequestsResponse(
            results=[hit_to_proto(h) for h in page.hits], next_cursor=page.next_cursor, partitions_searched=page.partitions
        )
        if page.unindexed:  # else "no matches" would be a wrong answer (LOGDB_FTS_ENABLED=false, `fts drop`)
            reply.warnings.append(
                f"{page.unindexed} of {page.partitions} partitions in range have no full-text index, so their requests"
                " were not searched: run `logdb fts build` for this store"
            )
        if page.unsplit:  # an earlier version indexed their runs of unspaced text whole: a word inside one is not found
            reply.warnings.append(
                f"{page.unsplit} of {page.partitions} partitions in range hold Chinese, Japanese, Korean, Thai, Lao,"
                " Khmer or Burmese text indexed by an earlier version, in which words inside a longer run were not"
                " found: run `logdb fts rebuild` for this store"
            )
        return reply

    def get_request(self, request: logs_pb2.GetRequestRequest, unreadable: Unreadable) -> logs_pb2.RequestRecord:
        """Notes nothing in `unreadable`: a record found is whole, and one that may be in a partition
        left out is PartitionUnreadable (queries.get_request)."""
        record = record_to_proto(queries.get_request(self.store, request.request_id))
        self._check_size(record.ByteSize(), request.request_id)
        return record

    def list_dialogs(
        self, request: logs_pb2.ListDialogsRequest, unreadable: Unreadable
    ) -> logs_pb2.ListDialogsResponse:
        page, cursor = queries.list_dialogs(
            self.store, filters_from_proto(request.filter), limit=request.limit, cursor=request.cursor,
            unreadable=unreadable,
        )
        return logs_pb2.ListDialogsResponse(dialogs=[dialog_summary(d) for d in page], next_cursor=cursor)

    def get_dialog(self, request: logs_pb2.GetDialogRequest, unreadable: Unreadable) -> logs_pb2.Dialog:
        """A page of a dialog's turns: at most `limit` (0: MAX_LIMIT) and, past the first turn,
        at most page_bytes. Turns are read one at a time, so a page reads one row past its end
        at most; the summary describes the whole dialog on every page (its readable turns, when
        a partition cannot be read; reading a turn's partition failing now is DATA_LOSS)."""
        if not request.dialog_id:
            raise InvalidQuery("dialog id is required", param="dialog_id")
        limit = page_size(request.limit) if request.limit else MAX_LIMIT
        after = decode_cursor(request.cursor, queries.TURN_CURSOR)
        whole = queries.summarize_dialogs(self.store, [request.dialog_id], unreadable=unreadable).get(request.dialog_id)
        if whole is None and unreadable:
            raise unreadable.not_found(f"dialog {request.dialog_id!r}")
        if whole is None:
            raise LogNotFound(f"dialog {request.dialog_id!r} is not in the log store", param="dialog_id")
        page = logs_pb2.Dialog(summary=dialog_summary(whole))
        size = page.ByteSize()
        keys = queries.dialog_turn_keys(self.store, request.dialog_id, after, limit + 1, unreadable)
        last = None
        for key, path in keys[:limit]:
            turn = queries.get_turn(self.store, path, key)
            if turn is not None:  # else deleted since the keys were read
                record = record_to_proto(turn)
                grown = size + record.ByteSize() + _FRAME_BYTES
                if page.turns and grown > self.page_bytes:
                    break
                self._check_size(grown, key[2])
                page.turns.append(record)
                size = grown
            last = key
        if last is not None and last != keys[-1][0]:  # turns after this page's
            page.next_cursor = encode_cursor(last)
        return page

    def ingest(self, request: logs_pb2.IngestRequest, unreadable: Unreadable) -> logs_pb2.IngestResponse:
        """Partitions that cannot be written are in `problems` and noted in `unreadable` (their
        rows stay in the log files for a later run). A LogService call that ends stops its workers at
        their next record (stoppable.stop_event: they are threads of their own)."""
        since, to = day_range(request.since, request.to)
        report = ingest(self.store, self.log_dir, since=since, to=to, stopping=stop_event())
        unreadable.update(report.unreadable)
        return logs_pb2.IngestResponse(
            files_scanned=report.files_scanned,
            files_ingested=report.files_ingested,
            rows_inserted=report.rows_inserted,
            rows_skipped=report.rows_skipped,
            rows_filtered=report.rows_filtered,
            records_corrupt=report.records_corrupt,
            problems=report.problems,
            elapsed_s=report.elapsed_s,
        )

    def build_index(
        self, request: logs_pb2.BuildIndexRequest, unreadable: Unreadable
    ) -> logs_pb2.BuildIndexResponse:
        if request.action not in logs_pb2.BuildIndexRequest.Action.values():  # proto3 passes unknown numbers on
            raise InvalidQuery(f"action {request.action} is not BUILD, REBUILD or DROP", param="action")
        since, to = day_range(request.since, request.to)
        out = logs_pb2.BuildIndexResponse()
        if request.action == logs_pb2.BuildIndexRequest.DROP:
            for path, existed in fts.drop(self.store, since, to, unreadable=unreadable).items():
                out.partitions.add(path=path, dropped=existed)
        else:
            rebuild = request.action == logs_pb2.BuildIndexRequest.REBUILD
            for path, result in fts.build(self.store, since, to, rebuild=rebuild, unreadable=unreadable).items():
                out.partitions.add(path=path, indexed=result["indexed"], skipped=result["skipped"])
        return out

    def stats(self, request: logs_pb2.StatsRequest, unreadable: Unreadable) -> logs_pb2.StatsResponse:
        since, to = day_range(request.since, request.to)
        return stats_to_proto(queries.stats(self.store, since, to, unreadable=unreadable))

