"""gRPC client side of bundles: push a bundle to a server's LogService.ImportBundle (resuming
from the offset the server already holds) and pull a new one from LogService.CreateBundle.
Targets are `grpc://HOST:PORT` or `grpcs://HOST:PORT` (TLS); calls carry an admin key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from aiproxy.logstore.bundles.manifest import WIRE_CHUNK, UnusableInput, sha256_file
from aiproxy.logstore.bundles.transfer import (
    TransferError,
    TransferResult,
    local_destination,
    part_path,
    publish,
)
from aiproxy.logstore.protomap import message_to_json
from aiproxypb.v1 import logs_pb2, logs_pb2_grpc

SCHEMES = ("grpc://", "grpcs://")


def is_remote(target: str) -> bool:
    return target.startswith(SCHEMES)


def parse_url(url: str) -> tuple[str, bool]:
    """(gRPC target HOST:PORT, whether it speaks TLS) of grpc://HOST:PORT or grpcs://HOST:PORT."""
    try:
        parts = urlsplit(url)
        port = parts.port  # a ValueError when it is not a number from 0 to 65535
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("grpc", "grpcs") or not parts.hostname or not port:
        raise UnusableInput(f"{url!r} is not grpc://HOST:PORT or grpcs://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 address keeps its brackets
    return f"{host}:{port}", parts.scheme == "grpcs"


def open_channel(url: str, ca_file: str | None = None) -> grpc.Channel:
    target, tls = parse_url(url)
    options = [("grpc.max_receive_message_length", 4 * WIRE_CHUNK)]
    if not tls:
        return grpc.insecure_channel(target, options=options)
    roots = Path(ca_file).read_bytes() if ca_file else None
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(roots), options=options)


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    key = api_key or os.environ.get("AIPROXY_API_KEY", "")
    return (("authorization", f"Bearer {key}"),) if key else ()


def _upload_messages(source: Path, sha256: str, size: int, offset: int, progress=None) -> Iterator:
    start = logs_pb2.BundleUploadStart(bundle_sha256=sha256, total_bytes=size, offset=offset, file_name=source.name)
    yield logs_pb2.BundleUploadChunk(start=start)
    with open(source, "rb") as stream:
        stream.seek(offset)
        while data := stream.read(WIRE_CHUNK):
            if progress is not None:
                progress(len(data))
            yield logs_pb2.BundleUploadChunk(data=data)


def push(source: Path, url: str, *, api_key: str | None = None, ca_file: str | None = None, progress=None) -> dict:
    """Upload `source` and have the server import it; returns ImportBundleResponse as JSON."""
    source = Path(source)
    sha256, size = sha256_file(source)
    metadata = auth_metadata(api_key)
    with open_channel(url, ca_file) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        held = stub.GetUploadOffset(
            logs_pb2.UploadOffsetRequest(bundle_sha256=sha256, total_bytes=size), metadata=metadata, timeout=60
        ).offset
        if progress is not None:
            progress(held)
        reply = stub.ImportBundle(_upload_messages(source, sha256, size, held, progress), metadata=metadata)
    return {"sha256": sha256, "bytes": size, **message_to_json(reply)}


def pull(
    url: str, since: date, to: date, out: str | Path, *,
    api_key: str | None = None, ca_file: str | None = None, include_raw: bool = False, progress=None,
) -> TransferResult:
    """Have the server create a bundle of [since, to] and store it at `out` (file or directory).
    `progress(bytes, total_bytes)` follows the download."""
    request = logs_pb2.CreateBundleRequest(since=since.isoformat(), to=to.isoformat(), include_raw=include_raw)
    with open_channel(url, ca_file) as channel:
        replies = logs_pb2_grpc.LogServiceStub(channel).CreateBundle(request, metadata=auth_metadata(api_key))
        info = next(replies).info
        final = local_destination(info.file_name, out)
        part = part_path(final)
        try:
            digest = hashlib.sha256()
            with open(part, "wb") as target:
                for chunk in replies:
                    digest.update(chunk.data)
                    target.write(chunk.data)
                    if progress is not None:
                        progress(len(chunk.data), info.total_bytes)
                target.flush()
                os.fsync(target.fileno())
            if (digest.hexdigest(), part.stat().st_size) != (info.sha256, info.total_bytes):
                raise TransferError(f"pulled bundle does not match the server's sha256 {info.sha256}; nothing kept")
            already = not publish(part, final, info.sha256, info.total_bytes)
        finally:
            part.unlink(missing_ok=True)  # a pull cannot resume (each creates a new bundle): keep no partial file
    return TransferResult(final, info.total_bytes, info.sha256, already_present=already)
