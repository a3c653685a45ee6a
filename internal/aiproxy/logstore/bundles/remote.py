"""gRPC client side of bundles: push a bundle to a server's LogService.ImportBundle (resuming
from the offset the server already holds) and pull a new one from LogService.CreateBundle.
Targets are `grpc://HOST:PORT` or `grpcs://HOST:PORT` (TLS); calls carry an admin key.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from aiproxy.logstore.bundles.idle_watch import IdleWatch
from aiproxy.logstore.bundles.manifest import SHA256_HEX, WIRE_CHUNK, UnusableInput, sha256_file
from aiproxy.logstore.bundles.transfer import (
    TransferError,
    TransferResult,
    different_file,
    local_destination,
    named_file,
    open_part,
    part_path,
    publish,
)
from aiproxy.logstore.protomap import message_to_json
from aiproxypb.v1 import logs_pb2, logs_pb2_grpc

SCHEMES = ("grpc://", "grpcs://")
# How long a pull waits for the next chunk of a bundle the server has announced (it is built by then),
# and a transfer for the server to take the next chunk of the upload.
IDLE_TIMEOUT_SECONDS = 300.0
# Where --client-cert / --client-key are taken from when not given.
CLIENT_CERT_ENV, CLIENT_KEY_ENV = "AIPROXY_CLIENT_CERT", "AIPROXY_CLIENT_KEY"


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


def _read(path: str, flag: str) -> bytes:
    if "-----BEGIN" in path:  # the file's contents given instead of its path: echoing it could print a private key
        raise UnusableInput(f"{flag} takes a file path, not PEM text: save the PEM in a file and name that file")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnusableInput(f"{flag} {path}: cannot read it ({exc.strerror})") from None


def _no_passphrase() -> bytes:
    """Called for an encrypted key, which OpenSSL would otherwise ask a passphrase for on the terminal."""
    raise UnusableInput("--client-key is encrypted with a passphrase, which logdb cannot ask for: use an"
                        " unencrypted copy (openssl pkey -in KEY -out NEW_KEY) readable only by you")


def _client_pair(cert: str, key: str) -> tuple[bytes, bytes]:
    """(key, certificate chain) PEM, checked here: gRPC would only fail the handshake, in words
    that name neither file."""
    key_pem, cert_pem = _read(key, "--client-key"), _read(cert, "--client-cert")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise UnusableInput(f"--client-cert {cert} and --client-key {key} do not form a valid pair"
                            f" ({exc.reason or exc})") from None
    return key_pem, cert_pem


def tls_credentials(ca_file: str | None = None, client_cert: str | None = None,
                    client_key: str | None = None) -> grpc.ChannelCredentials:
    """Trusting `ca_file` (else the system roots); with a client certificate (default: env
    AIPROXY_CLIENT_CERT / AIPROXY_CLIENT_KEY) for a listener that requires one (mutual TLS)."""
    cert = client_cert or os.environ.get(CLIENT_CERT_ENV) or None
    key = client_key or os.environ.get(CLIENT_KEY_ENV) or None
    if bool(cert) != bool(key):
        raise UnusableInput(f"a client certificate needs both --client-cert and --client-key"
                            f" ({CLIENT_CERT_ENV} and {CLIENT_KEY_ENV}); only one is set")
    roots = _read(ca_file, "--ca-file") if ca_file else None
    key_pem, cert_pem = _client_pair(cert, key) if cert else (None, None)
    return grpc.ssl_channel_credentials(roots, key_pem, cert_pem)


def tls_channel(target: str, options: list, *, ca_file: str | None = None, client_cert: str | None = None,
                client_key: str | None = None, server_name: str | None = None) -> grpc.Channel:
    """A TLS channel with tls_credentials(); `server_name`: the name the server's certificate must
    carry when it is not the host dialled (an IP address, a tunnel, an SSH forward), as grpcurl's
    -authority; it is also the name sent in SNI."""
    if server_name:
        options = [*options, ("grpc.ssl_target_name_override", server_name)]
    return grpc.secure_channel(target, tls_credentials(ca_file, client_cert, client_key), options=options)


def open_channel(url: str, **tls) -> grpc.Channel:
    """A channel to a grpc:// or grpcs:// URL; `tls`: tls_channel's keyword arguments."""
    target, is_tls = parse_url(url)
    options = [("grpc.max_receive_message_length", 4 * WIRE_CHUNK)]
    if not is_tls:
        return grpc.insecure_channel(target, options=options)
    return tls_channel(target, options, **tls)


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    key = api_key or os.environ.get("AIPROXY_API_KEY", "")
    return (("authorization", f"Bearer {key}"),) if key else ()


def _upload_messages(source: Path, sha256: str, size: int, offset: int, watch: IdleWatch, progress=None) -> Iterator:
    """The upload from `offset`; gRPC asks for the next message once it sent the last, which is what
    `watch` is told. The wait for the import's answer that follows has no limit (it takes as long as the bundle)."""
    start = logs_pb2.BundleUploadStart(bundle_sha256=sha256, total_bytes=size, offset=offset, file_name=source.name)
    yield logs_pb2.BundleUploadChunk(start=start)
    with open(source, "rb") as stream:
        stream.seek(offset)
        while data := stream.read(WIRE_CHUNK):
            watch.touch()
            if progress is not None:
                progress(len(data))
            yield logs_pb2.BundleUploadChunk(data=data)
    watch.close()


def push(source: Path, url: str, *, api_key: str | None = None, progress=None,
         idle_timeout: float = IDLE_TIMEOUT_SECONDS, **tls) -> dict:
    """Upload `source` and have the server import it; returns ImportBundleResponse as JSON. The
    upload ends when the server takes no chunk for `idle_timeout` seconds; `tls`: tls_channel's
    keyword arguments."""
    source = Path(source)
    sha256, size = sha256_file(source)
    metadata = auth_metadata(api_key)
    with open_channel(url, **tls) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        held = stub.GetUploadOffset(
            logs_pb2.UploadOffsetRequest(bundle_sha256=sha256, total_bytes=size), metadata=metadata, timeout=60
        ).offset
        if not 0 <= held <= size:  # seeking there failed as "Exception iterating requests!", or sent no byte
            raise TransferError(f"the server says it holds {held} bytes of this {size}-byte upload, which cannot be;"
                                " nothing sent")
        if progress is not None:
            progress(held)
        watch = IdleWatch(idle_timeout)
        call = stub.ImportBundle.future(_upload_messages(source, sha256, size, held, watch, progress), metadata=metadata)
        with watch.start(call):
            try:
                reply = call.result()
            except (grpc.FutureCancelledError, grpc.RpcError):
                if watch.fired:
                    raise watch.idle_error("took no more of the upload", "run the same command again to resume") from None
                raise
    return {"sha256": sha256, "bytes": size, **message_to_json(reply)}


def pull(
    url: str, since: date, to: date, out: str | Path, *,
    api_key: str | None = None, include_raw: bool = False, progress=None,
    idle_timeout: float = IDLE_TIMEOUT_SECONDS, **tls,
) -> TransferResult:
    """Have the server create a bundle of [since, to] and store it at `out` (file or directory).
    `progress(bytes, total_bytes)` follows the download, which ends when no chunk comes for
    `idle_timeout` seconds; `tls`: tls_channel's keyword arguments."""
    request = logs_pb2.CreateBundleRequest(since=since.isoformat(), to=to.isoformat(), include_raw=include_raw)
    _refuse_existing(named_file(out))  # before the server builds a bundle (minutes for a long range)
    with open_channel(url, **tls) as channel:
        replies = logs_pb2_grpc.LogServiceStub(channel).CreateBundle(request, metadata=auth_metadata(api_key))
        info = _announcement(replies)
        final = local_destination(info.file_name, out)
        _refuse_existing(final)  # the name the server chose in a directory, or a file that appeared meanwhile
        part = part_path(final)
        try:
            with open_part(part) as target, IdleWatch(idle_timeout).start(replies) as watch:
                digest = _download(replies, target, info, watch, progress)
            if (digest, part.stat().st_size) != (info.sha256, info.total_bytes):
                raise TransferError(f"pulled bundle does not match the server's sha256 {info.sha256}; nothing kept")
            already = not publish(part, final, info.sha256, info.total_bytes)
        finally:
            part.unlink(missing_ok=True)  # a pull cannot resume (each creates a new bundle): keep no partial file
    return TransferResult(final, info.total_bytes, info.sha256, already_present=already)


def _download(replies, target, info: logs_pb2.BundleInfo, watch: IdleWatch, progress) -> str:
    """Write the stream's chunks to `target`; their sha256."""
    digest = hashlib.sha256()
    try:
        for chunk in replies:
            watch.touch()
            if target.tell() + len(chunk.data) > info.total_bytes:  # never fill the disk for a server
                raise TransferError(f"the server sent more than the announced {info.total_bytes} bytes; nothing kept")
            digest.update(chunk.data)
            target.write(chunk.data)
            if progress is not None:
                progress(len(chunk.data), info.total_bytes)
    except grpc.RpcError:
        if watch.fired:
            raise watch.idle_error("sent nothing", "nothing kept") from None
        raise
    target.flush()
    os.fsync(target.fileno())
    return digest.hexdigest()


def _announcement(replies) -> logs_pb2.BundleInfo:
    """The BundleInfo the stream starts with, checked before anything is written or quoted: a server
    that ends the stream at once, sends data first, or a size or sha256 that cannot be is refused."""
    first = next(replies, None)
    if first is None or first.WhichOneof("kind") != "info":
        raise TransferError("the server ended the bundle stream without announcing a bundle; nothing kept")
    info = first.info
    if info.total_bytes < 0 or not SHA256_HEX.fullmatch(info.sha256):
        raise TransferError("the server announced no usable bundle (a negative size, or a sha256 that is not"
                            " 64 hex digits); nothing kept")
    return info


def _refuse_existing(path: Path | None) -> None:
    """A pull brings a new bundle (its own bundle id), so a file already at `path` never holds its
    bytes: refused before the download, as publish() would refuse it after (it still does, for a
    file that appears during the download)."""
    if path is not None and path.exists():
        raise different_file(path)
