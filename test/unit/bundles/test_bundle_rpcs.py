"""How LogService's bundle methods report errors: a status code per kind of failure (the one
`logdb` turns into the same exit code as the local command) and a message that fits gRPC's
metadata limit."""

import asyncio

import grpc
import pytest

from aiproxy.entrypoints.logdb import _GRPC_EXIT
from aiproxy.logstore.bundles.incoming import UploadError
from aiproxy.logstore.bundles.manifest import BundleError, NoSpace, StoreError, UnusableInput
from aiproxy.rpc.bundle_rpcs import _abort
from aiproxy.rpc.status import MAX_STATUS_MESSAGE_BYTES


class _Aborted(Exception):
    pass


class _Context:
    async def abort(self, code, details="", trailing_metadata=()):
        self.code, self.details = code, details
        raise _Aborted


def aborted(exc: Exception) -> _Context:
    context = _Context()
    with pytest.raises(_Aborted):
        asyncio.run(_abort(context, exc))
    return context


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (NoSpace("x unpacks to 9 bytes and the store's disk has 1 bytes free"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (UnusableInput("truncated"), grpc.StatusCode.INVALID_ARGUMENT),
        (UploadError("resume from 0"), grpc.StatusCode.FAILED_PRECONDITION),
        (BundleError("sha256 mismatch"), grpc.StatusCode.DATA_LOSS),
        (StoreError("nothing imported, the store failed (disk I/O error)"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_failure_has_its_code_and_the_local_exit_code(exc, code):
    context = aborted(exc)
    assert context.code == code and context.details == str(exc)
    assert _GRPC_EXIT.get(context.code, 1) == exc.exit_code  # a full disk: not "a bad bundle", still exit 1


def test_a_message_quoting_client_input_is_clipped_to_fit_grpc_metadata():
    context = aborted(UnusableInput(f"bundle_sha256 {'f' * 100_000!r} is not a lower-case hex SHA-256"))
    assert len(context.details.encode()) <= MAX_STATUS_MESSAGE_BYTES and context.details.endswith("…[truncated]")
