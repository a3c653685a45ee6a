"""How a cancelled gRPC chat call is recorded: the client's deadline, a client that gave up, or the
gateway's own stop."""

import asyncio

import pytest

from aiproxy.errors import ClientDeadlineExceeded, ServerShuttingDown
from aiproxy.rpc.chat_service import DEADLINE_SLACK_S, ended_by


class _Context:
    """The one thing ended_by asks of grpc.aio's ServicerContext."""

    def __init__(self, remaining: float | None) -> None:
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining


@pytest.mark.parametrize("remaining", [-0.01, 0.0, 0.05, DEADLINE_SLACK_S])
def test_a_cancel_at_the_deadline_is_the_deadline_though_the_servers_copy_has_a_little_left(remaining):
    # The client's own deadline fires first (its clock started before the request's trip), and its
    # cancel arrives while the server's deadline has that trip's time left: it was logged as 499.
    assert isinstance(ended_by(asyncio.CancelledError(), _Context(remaining)), ClientDeadlineExceeded)


@pytest.mark.parametrize("remaining", [None, DEADLINE_SLACK_S + 0.01, 30.0])
def test_a_cancel_well_before_the_deadline_or_without_one_is_the_clients(remaining):
    cancelled = asyncio.CancelledError()
    assert ended_by(cancelled, _Context(remaining)) is cancelled


def test_the_gateways_own_stop_is_never_taken_for_the_deadline():
    stopping = asyncio.CancelledError(ServerShuttingDown.CANCEL_MESSAGE)
    assert ended_by(stopping, _Context(0.0)) is stopping
