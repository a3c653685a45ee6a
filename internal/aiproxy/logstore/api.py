"""The LogService operations on a local store, proto in and proto out.

The gRPC servicer runs these in a worker thread; the `logdb` CLI calls them directly (or the
same RPCs on a server with --remote), so both print identical JSON.
"""

from __future__ import annotations

from pathlib import Path

from aiproxy.logstore import fts, queries
from aiproxy.logstore.errors import InvalidQuery
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.protomap import (
    day_arg,
    dialog_summary,
    filters_from_proto,
    hit_to_proto,
    record_to_proto,
    stats_to_proto,
)
from aiproxy.logstore.queries import DialogSummary
from aiproxy.logstore.search import search
from aiproxy.logstore.store import Store
from aiproxypb.v1 import logs_pb2


class LogApi:
    def __init__(self, store: Store, log_dir: Path) -> None:
        self.store = store
        self.log_dir = Path(log_dir)

    def search_requests(self, request: logs_pb2.SearchRequestsRequest) -> logs_pb2.SearchRequestsResponse:
        page = search(self.store, request.q, filters_from_proto(request.filter), limit=request.limit, cursor=request.cursor)
        return logs_pb2.SearchRequestsResponse(
            results=[hit_to_proto(h) for h in page.hits], next_cursor=page.next_cursor, partitions_searched=page.partitions
        )

    def get_request(self, request: logs_pb2.GetRequestRequest) -> logs_pb2.RequestRecord:
        return record_to_proto(queries.get_request(self.store, request.request_id))

    def list_dialogs(self, request: logs_pb2.ListDialogsRequest) -> logs_pb2.ListDialogsResponse:
        page, cursor = queries.list_dialogs(
            self.store, filters_from_proto(request.filter), limit=request.limit, cursor=request.cursor
        )
        return logs_pb2.ListDialogsResponse(dialogs=[dialog_summary(d) for d in page], next_cursor=cursor)

    def get_dialog(self, request: logs_pb2.GetDialogRequest) -> logs_pb2.Dialog:
        turns = queries.get_dialog(self.store, request.dialog_id)
        models = sorted({t["model_mapped"] for t in turns if t["model_mapped"]})
        head = DialogSummary(
            request.dialog_id, len(turns), turns[0]["ts"], turns[-1]["ts"], turns[0]["api_key_hash"], models,
            turns[0]["request_id"],
        )
        return logs_pb2.Dialog(summary=dialog_summary(head), turns=[record_to_proto(t) for t in turns])

    def ingest(self, request: logs_pb2.IngestRequest) -> logs_pb2.IngestResponse:
        report = ingest(self.store, self.log_dir, since=day_arg(request.since, "since"), to=day_arg(request.to, "to"))
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

    def build_index(self, request: logs_pb2.BuildIndexRequest) -> logs_pb2.BuildIndexResponse:
        if request.action not in logs_pb2.BuildIndexRequest.Action.values():  # proto3 passes unknown numbers on
            raise InvalidQuery(f"action {request.action} is not BUILD, REBUILD or DROP", param="action")
        since, to = day_arg(request.since, "since"), day_arg(request.to, "to")
        out = logs_pb2.BuildIndexResponse()
        if request.action == logs_pb2.BuildIndexRequest.DROP:
            for path, existed in fts.drop(self.store, since, to).items():
                out.partitions.add(path=path, dropped=existed)
        else:
            rebuild = request.action == logs_pb2.BuildIndexRequest.REBUILD
            for path, result in fts.build(self.store, since, to, rebuild=rebuild).items():
                out.partitions.add(path=path, indexed=result["indexed"], skipped=result["skipped"])
        return out

    def stats(self, request: logs_pb2.StatsRequest) -> logs_pb2.StatsResponse:
        return stats_to_proto(queries.stats(self.store, day_arg(request.since, "since"), day_arg(request.to, "to")))

