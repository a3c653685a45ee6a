"""LogService's bundle methods (CreateBundle, ImportBundle, GetUploadOffset), mixed into the
LogService servicer, which provides `self._api` (the store and the log directory).

Archive work (create, checksum, import) runs in worker threads; the event loop only moves
chunks. Uploads are resumable: received bytes are kept under `<logdb dir>/incoming/`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path

import grpc

from aiproxy.errors import GatewayError, error_type_for_http
from aiproxy.logstore.bundles.create import create_bundle
from aiproxy.logstore.bundles.importer import import_bundle, incoming_dir
from aiproxy.logstore.bundles.incoming import UploadBusy, UploadError, Uploads
from aiproxy.logstore.bundles.manifest import WIRE_CHUNK, BundleError, NoSpace, StoreError, UnusableInput
from aiproxy.logstore.protomap import day_range
from aiproxy.rpc.status import abort_with
from aiproxy.rpc.worker_threads import in_stoppable_thread
from aiproxypb.v1 import logs_pb2

# The same exit codes as a local command: `logdb` exits 2 on INVALID_ARGUMENT (unusable input,
# a usage error) and 1 on the rest (a bad bundle, a checksum mismatch, a failed upload, a full disk,
# a store that failed a write). The ErrorDetail's HTTP status and `code` follow.
_CODES = (
    (NoSpace, grpc.StatusCode.RESOURCE_EXHAUSTED, 507, "no_space"),  # the store's disk, not the bundle
    (UploadBusy, grpc.StatusCode.ABORTED, 409, "upload_busy"),
    (UploadError, grpc.StatusCode.FAILED_PRECONDITION, 400, "upload_error"),
    (UnusableInput, grpc.StatusCode.INVALID_ARGUMENT, 400, "unusable_input"),
    (StoreError, grpc.StatusCode.UNAVAILABLE, 503, "store_error"),  # the store's files failed a write or stayed locked: undone
    (BundleError, grpc.StatusCode.DATA_LOSS, 500, "bad_bundle"),  # a bad bundle, ChecksumMismatch included
)


class _BundleFailure(GatewayError):
    """A BundleError as the GatewayError every RPC error is, so that it carries the ErrorDetail trailer."""

    def __init__(self, exc: BundleError) -> None:
        self._grpc_code, status, code = next(row[1:] for row in _CODES if isinstance(exc, row[0]))
        super().__init__(str(exc), code=code, http_status=status, error_type=error_type_for_http(status))

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return self._grpc_code


class _Stopped(Exception):
    """Raised in an archive thread at its next progress step once its call has ended."""


async def _in_thread(work, *args, **kwargs):
    """work(*args, progress=..., **kwargs) in a stoppable worker thread (worker_threads.py), which
    also ends at its next progress step once the call is cancelled: it used to run on to the end,
    and the process's exit waited for it, a whole bundle of a large store."""

    def run(stop: threading.Event):
        def progress(_: int) -> None:
            if stop.is_set():
                raise _Stopped

        return work(*args, progress=progress, **kwargs)

    return await in_stoppable_thread(run)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception):
    # Messages quote client input (a bundle_sha256, tar member names): abort_with clips them, as
    # every status message is, to stay under gRPC's metadata limit.
    await abort_with(context, exc if isinstance(exc, GatewayError) else _BundleFailure(exc))


class BundleRpcs:
    def _uploads(self) -> Uploads:
        return Uploads(incoming_dir(self._api.store))

    async def CreateBundle(self, request, context):
        store = self._api.store
        try:
            since, to = day_range(request.since, request.to)
            if since is None or to is None:
                raise UnusableInput("since and to (YYYY-MM-DD) are required")
            scratch = Path(tempfile.mkdtemp(prefix="outgoing-", dir=incoming_dir(store)))
        except (GatewayError, BundleError) as exc:
            await _abort(context, exc)
        try:
            raw_dir = self._api.log_dir if request.include_raw else None
            try:
                result = await _in_thread(create_bundle, store, since, to, scratch, raw_dir=raw_dir)
            except ValueError as exc:  # an inverted range
                await _abort(context, UnusableInput(str(exc)))
            yield logs_pb2.BundleChunk(
                info=logs_pb2.BundleInfo(
                    file_name=result.path.name, total_bytes=result.bytes, sha256=result.sha256,
                    bundle_id=result.bundle_id, files=result.files, rows=result.rows,
                )
            )
            archive = await asyncio.to_thread(open, result.path, "rb")
            try:
                while data := await asyncio.to_thread(archive.read, WIRE_CHUNK):
                    yield logs_pb2.BundleChunk(data=data)
            finally:
                archive.close()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def GetUploadOffset(self, request, context):
        try:
            offset = self._uploads().offset(request.bundle_sha256, request.total_bytes)
        except BundleError as exc:
            await _abort(context, exc)
        return logs_pb2.UploadOffsetResponse(offset=offset)

    async def ImportBundle(self, request_iterator, context):
        uploads = self._uploads()
        start, stream, received = None, None, 0
        try:
            async for message in request_iterator:
                is_start = message.WhichOneof("kind") == "start"
                if start is None:
                    if not is_start:
                        raise UnusableInput("the first message of an upload must be `start`")
                    start, received = message.start, message.start.offset
                    stream = uploads.open_at(start.bundle_sha256, start.total_bytes, start.offset)
                    continue
                if is_start:
                    raise UnusableInput("a second `start` message in one upload")
                if received + len(message.data) > start.total_bytes:
                    raise UploadError(f"more than the announced {start.total_bytes} bytes")
                await asyncio.to_thread(stream.write, message.data)
                received += len(message.data)
            if start is None:
                raise UnusableInput("empty upload: no `start` message")
            reply = logs_pb2.ImportBundleResponse(received_bytes=received, resumed_from=start.offset)
            if received < start.total_bytes:
                return reply
            # Checked and imported under the upload's lock: another upload of this bundle (a
            # retried transfer) cannot rewind the file meanwhile. The client knows its bundle by
            # name, not by where this server keeps uploads.
            bundle = await asyncio.to_thread(uploads.finish, start.bundle_sha256, start.total_bytes)
            label = start.file_name or f"bundle {start.bundle_sha256}"
            try:
                result = await _in_thread(import_bundle, bundle, self._api.store, label=label)
            finally:
                bundle.unlink(missing_ok=True)
        except BundleError as exc:
            await _abort(context, exc)
        finally:
            if stream is not None:
                stream.close()  # keeps every byte received, also when the client went away
        reply.complete = True
        reply.bundle_id, reply.source_server_id = result.bundle_id, result.source_server_id
        reply.rows_imported, reply.rows_skipped = result.rows_imported, result.rows_skipped
        reply.partitions, reply.new_partitions = result.partitions, result.new_partitions
        return reply
