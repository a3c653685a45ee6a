"""Error trailers stay within what gRPC clients accept, whatever the message holds."""

from __future__ import annotations

import asyncio

import pytest

from aiproxy.errors import InvalidRequest, UpstreamError, clip
from aiproxy.rpc.status import MAX_DETAIL_MESSAGE_BYTES, error_detail, error_trailers
from aiproxypb.v1 import common_pb2

SOFT_LIMIT = 8192  # grpc.max_metadata_size: clients may refuse trailers above it


@pytest.mark.parametrize("message", ["e" * 30_000, "日本" * 20_000, "\U0001f40d" * 10_000])
def test_huge_messages_are_clipped_to_fit_the_trailers(message):
    exc = UpstreamError(message, http_status=400, param="p" * 5000, headers={"retry-after": "5", "x-ratelimit-x": "y" * 9000})
    trailers = error_trailers(exc, "r" * 128)
    assert sum(len(k) + len(v) for k, v in trailers) * 4 // 3 < SOFT_LIMIT  # -bin values travel base64-encoded
    detail = common_pb2.ErrorDetail.FromString(dict(trailers)["aiproxy-error-bin"])
    assert detail.message.endswith("…[truncated]") and detail.message.startswith(message[:100])
    assert len(detail.message.encode()) <= MAX_DETAIL_MESSAGE_BYTES
    assert detail.http_status == 400 and dict(detail.headers) == {"retry-after": "5"}


def test_short_messages_are_untouched():
    assert error_detail(InvalidRequest("bad 'model'", param="model")).message == "bad 'model'"
    assert clip("héllo", 6) == "héllo"


def test_clip_never_splits_a_character():
    # 16 bytes leave 2 before the 14-byte marker: "h" and the first byte of "é", which is dropped.
    clipped = clip("héllo wörld héllo wörld", 16)
    assert clipped == "h…[truncated]"
    data = clipped.encode("utf-8")  # strict: a split character would not encode
    assert len(data) <= 16 and data.decode("utf-8") == clipped


class _RefusedCall:
    def __init__(self, request_id: str) -> None:
        self.trailers = None
        self._metadata = (("x-request-id", request_id),)

    def invocation_metadata(self):
        return self._metadata

    async def abort(self, code, details, trailing_metadata):
        self.trailers = dict(trailing_metadata)


@pytest.mark.parametrize("given", ["r" * 500, "id with spaces\u00e9"])
def test_a_call_refused_at_shutdown_never_echoes_an_unfit_request_id(given):
    """Was: the client's raw x-request-id went back in the trailers, where every other answer checks it first."""
    from aiproxy.rpc.server import _refuse

    call = _RefusedCall(given)
    asyncio.run(_refuse(call))
    assert call.trailers["x-request-id"].startswith("req_")


def test_a_call_refused_at_shutdown_keeps_a_sane_request_id():
    from aiproxy.rpc.server import _refuse

    call = _RefusedCall("client-id-1")
    asyncio.run(_refuse(call))
    assert call.trailers["x-request-id"] == "client-id-1"
