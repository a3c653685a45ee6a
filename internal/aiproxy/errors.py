"""The one domain error tree. Each error knows its OpenAI error body, HTTP status and gRPC code.

The gRPC servicers raise these; `aiproxy.rpc.status` maps them to a gRPC status plus an
`ErrorDetail` trailer, and the REST facade maps that back to the same HTTP status and body.
"""

from __future__ import annotations

import errno

import grpc

# HTTP status -> gRPC code, for upstream errors (the inverse of grpc-gateway's table).
_HTTP_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# gRPC code -> HTTP status, grpc-gateway's table; used when a status carries no ErrorDetail.
GRPC_TO_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def grpc_code_for_http(status: int) -> grpc.StatusCode:
    if status in _HTTP_TO_GRPC:
        return _HTTP_TO_GRPC[status]
    return grpc.StatusCode.FAILED_PRECONDITION if 400 <= status < 500 else grpc.StatusCode.INTERNAL


def error_type_for_http(status: int) -> str:
    """OpenAI's `error.type` for a status when the upstream did not name one."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


def clip(text: str, max_bytes: int) -> str:
    """text cut to at most max_bytes of UTF-8, ending in a visible marker when cut: error messages
    travel in gRPC metadata, which clients refuse beyond 16 KiB, and may quote client input."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    return data[: max(max_bytes - _CLIPPED_BYTES, 0)].decode("utf-8", "ignore") + _CLIPPED


_CLIPPED = "…[truncated]"
_CLIPPED_BYTES = len(_CLIPPED.encode())
MAX_QUOTED_BYTES = 256  # a client value (model name, id) quoted in an error message
SHOULD_RETRY = "x-should-retry"  # the OpenAI SDKs' retry switch: "true" or "false" overrides the status


class GatewayError(Exception):
    """Base of every error a client may see. Subclasses fix status, type and code."""

    http_status: int = 500
    error_type: str = "server_error"
    default_code: str | None = None
    # An error only the operator can end (no key, a rejected key): its answer says `x-should-retry:
    # false`, which the OpenAI SDKs obey; by its status (5xx) they would retry it max_retries times.
    retry_cannot_help: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        http_status: int | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        if http_status is not None:
            self.http_status = http_status
        if error_type is not None:
            self.error_type = error_type
        self.headers = headers or {}
        if self.retry_cannot_help:
            self.headers[SHOULD_RETRY] = "false"

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc_code_for_http(self.http_status)

    def to_body(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class InternalError(GatewayError):
    """A bug or an unexpected failure: the client gets this generic answer, the app log the traceback."""

    def __init__(self) -> None:
        super().__init__("The gateway hit an internal error.")


class ServerShuttingDown(GatewayError):
    """A call still running when the shutdown grace period ended."""

    http_status = 503
    default_code = "server_shutting_down"
    # The cancel message of the calls ended at the deadline, so their record says 503, not 499.
    CANCEL_MESSAGE = "aiproxy: shutdown deadline"

    def __init__(self) -> None:
        super().__init__("The gateway is shutting down and could not finish this request in time; retry it.")


class InvalidRequest(GatewayError):
    http_status = 400
    error_type = "invalid_request_error"

    @classmethod
    def integer_beyond_64_bits(cls, digits: str) -> InvalidRequest:
        """orjson reads such an integer as a float: it would reach the upstream changed."""
        return cls(f"The request contains the integer {digits[:40]}{'...' if len(digits) > 40 else ''}, beyond the"
                   " 64-bit range JSON parsers agree on (RFC 8259 section 6); send it as a string or a float.")


class AuthenticationFailed(GatewayError):
    http_status = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("www-authenticate", 'Bearer realm="aiproxy"')


class PermissionDenied(GatewayError):
    http_status = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFound(GatewayError):
    http_status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class RequestTimeout(GatewayError):
    http_status = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class ClientDeadlineExceeded(GatewayError):
    """What the request log says of a gRPC call its client's deadline ended (grpc.aio cancels the
    handler; the client already has DEADLINE_EXCEEDED): not a client that gave up (499)."""

    http_status = 504
    default_code = "client_deadline_exceeded"

    def __init__(self) -> None:
        super().__init__("The client's gRPC deadline passed before the answer was complete; the gateway ended the"
                         " upstream call.")


class ClientStalled(RequestTimeout):
    """A stream client that read none of its answer for REQUEST_BODY_TIMEOUT_SECONDS: the call ends,
    and with it the upstream call and the answer held for the request log."""

    default_code = "client_read_timeout"


class PayloadTooLarge(GatewayError):
    http_status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"

    @classmethod
    def over(cls, limit: int, what: str = "request body") -> PayloadTooLarge:
        return cls(f"The {what} is larger than this gateway accepts ({limit} bytes); send a smaller request or ask"
                   " the operator to raise MAX_BODY_BYTES.")


class ProviderNotConfigured(GatewayError):
    """The alias maps to a provider the operator has not given a key or URL."""

    http_status = 503
    error_type = "server_error"
    default_code = "provider_not_configured"
    retry_cannot_help = True


class UpstreamError(GatewayError):
    """The upstream answered with an error status; status and body are normalised."""

    error_type = "server_error"


class UpstreamTimeout(GatewayError):
    http_status = 504
    error_type = "server_error"
    default_code = "upstream_timeout"


class UpstreamUnreachable(GatewayError):
    http_status = 502
    error_type = "server_error"
    default_code = "upstream_unreachable"


class UpstreamBusy(GatewayError):
    """Every connection of the provider's pool (max_connections) stayed in use for the pool timeout:
    the upstream may be fine, the gateway has no room for one more call to it."""

    http_status = 503
    error_type = "server_error"
    default_code = "upstream_busy"


class OutOfFileDescriptors(GatewayError):
    """A call needed a descriptor (an upstream connection, a provider's first use) and the gateway's
    process (EMFILE) or the system (ENFILE) had none left: the gateway's own limit, not the upstream's
    fault (it was a 502 `upstream_unreachable`, or a 500 and a traceback), and over once connections close."""

    http_status = 503
    error_type = "server_error"
    default_code = "gateway_out_of_file_descriptors"

    def __init__(self) -> None:
        super().__init__("The gateway has too many connections open to open another; retry shortly "
                         "(the operator can raise its open-file limit).")

    @staticmethod
    def caused(exc: BaseException | None) -> bool:
        return isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)


class UpstreamMisconfigured(GatewayError):
    """The upstream rejected the gateway's own provider key: an operator problem, never a client 401."""

    http_status = 502
    error_type = "server_error"
    default_code = "upstream_auth_failed"
    retry_cannot_help = True


class UpstreamBadResponse(GatewayError):
    http_status = 502
    error_type = "server_error"
    default_code = "bad_upstream_response"

    @classmethod
    def too_large(cls, source: str, limit: int) -> UpstreamBadResponse:
        """An answer (or one stream event) over what one gRPC message relays: read no further."""
        return cls(f"{source} sent an answer larger than the gateway relays ({limit} bytes per message; the operator"
                   " sets it with MAX_BODY_BYTES).")


class UpstreamStreamTruncated(UpstreamBadResponse):
    """The upstream closed a stream before its end marker: the answer may be cut short."""

    default_code = "upstream_stream_truncated"
