"""LogService servicer: each call runs the LogApi operation in a worker thread (SQLite work
never blocks the event loop), stopped part-way when the call ends first (worker_threads.py).
Admin-key checks happen in the server's auth interceptor.

Partitions a call had to leave out (a damaged file: docs/logstore.md) are named, by day, in its
reply's `warnings`; what cannot be answered without one is DATA_LOSS with the OpenAI error body,
as every LogService error."""

from __future__ import annotations

from pathlib import Path

import grpc

from aiproxy.errors import GatewayError
from aiproxy.logstore.api import LogApi
from aiproxy.logstore.damage import Unreadable
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.store import Store
from aiproxy.rpc.bundle_rpcs import BundleRpcs
from aiproxy.rpc.status import abort_with
from aiproxy.rpc.worker_threads import in_stoppable_thread
from aiproxypb.v1 import logs_pb2_grpc


class LogServicer(BundleRpcs, logs_pb2_grpc.LogServiceServicer):
    def __init__(self, api: LogApi) -> None:
        self._api = api

    async def _call(self, operation, request, context: grpc.aio.ServicerContext):
        unreadable = Unreadable()
        try:
            reply = await in_stoppable_thread(lambda _stop: operation(request, unreadable))
        except GatewayError as exc:
            await abort_with(context, exc)
        if unreadable:  # never for GetRequest, whose RequestRecord has no warnings
            reply.warnings.extend(unreadable.warnings())
        return reply

    async def SearchRequests(self, request, context):
        return await self._call(self._api.search_requests, request, context)

    async def GetRequest(self, request, context):
        return await self._call(self._api.get_request, request, context)

    async def ListDialogs(self, request, context):
        return await self._call(self._api.list_dialogs, request, context)

    async def GetDialog(self, request, context):
        return await self._call(self._api.get_dialog, request, context)

    async def Ingest(self, request, context):
        return await self._call(self._api.ingest, request, context)

    async def BuildIndex(self, request, context):
        return await self._call(self._api.build_index, request, context)

    async def Stats(self, request, context):
        return await self._call(self._api.stats, request, context)


def add_log_service(server: grpc.aio.Server, settings) -> None:
    """Register LogService on `server` for the store configured in `settings` (aiproxy.config.Settings).
    Replies are kept within settings.grpc_message_bytes: dialogs in pages, a larger record a clear error."""
    store = Store(LogStoreSettings.from_mapping(settings.logdb))
    api = LogApi(store, Path(settings.log_dir), max_message_bytes=settings.grpc_message_bytes)
    logs_pb2_grpc.add_LogServiceServicer_to_server(LogServicer(api), server)
