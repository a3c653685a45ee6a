"""Real `logdb` processes against a LogService that misbehaves (seeded): whatever the server sends,
the command ends with one printable line on stderr, a failure exit code, and no file left behind."""

import asyncio
import random
import re
import threading

import grpc
import pytest

from aiproxy.testing.logdb_processes import finished, logdb
from aiproxypb.v1 import logs_pb2, logs_pb2_grpc

_RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NASTY = ["\x1b[31m", "\x1b]0;pwned\x07", "\r", "\n", "\x00", "\x9b2J", "\u202e", "é", "\t", "x" * 300]


def _nasty_text(rng: random.Random) -> str:
    return "".join(rng.choice(_NASTY) + rng.choice(["fake", " ", "ok\n"]) for _ in range(rng.randint(2, 8)))


class _Hostile(logs_pb2_grpc.LogServiceServicer):
    """Each RPC does what `self.behaviour` says: ("abort", code, details), ("empty",), ("info", BundleInfo)
    (then 3 bytes), ("stall", BundleInfo) (then 3 bytes and nothing more, the stream left open) or
    ("offset", n) (the bytes of an upload it claims to hold), ("reply", ImportBundleResponse) or
    ("warnings", [text]) (a search leaving partitions out) or ("hits", [RequestSummary])."""

    behaviour: tuple = ("empty",)

    async def _misbehave(self, context):
        if self.behaviour[0] == "abort":
            await context.abort(self.behaviour[1], self.behaviour[2])

    async def CreateBundle(self, request, context):
        await self._misbehave(context)
        if self.behaviour[0] in ("info", "stall"):
            yield logs_pb2.BundleChunk(info=self.behaviour[1])
            yield logs_pb2.BundleChunk(data=b"abc")
        if self.behaviour[0] == "stall":
            await asyncio.Event().wait()  # until the client cancels, or the server stops

    async def GetUploadOffset(self, request, context):
        await self._misbehave(context)
        return logs_pb2.UploadOffsetResponse(offset=self.behaviour[1] if self.behaviour[0] == "offset" else 0)

    async def ImportBundle(self, request_iterator, context):
        if self.behaviour[0] == "reply":
            async for _ in request_iterator:
                pass
            return self.behaviour[1]
        await asyncio.Event().wait()  # reads none of the upload, until the client cancels or the server stops

    async def SearchRequests(self, request, context):
        await self._misbehave(context)
        if self.behaviour[0] == "hits":
            return logs_pb2.SearchRequestsResponse(results=self.behaviour[1])
        return logs_pb2.SearchRequestsResponse(warnings=self.behaviour[1] if self.behaviour[0] == "warnings" else [])


@pytest.fixture(scope="module")
def hostile():
    servicer, ready, loop = _Hostile(), threading.Event(), asyncio.new_event_loop()

    async def serve():
        server = grpc.aio.server()
        logs_pb2_grpc.add_LogServiceServicer_to_server(servicer, server)
        servicer.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        servicer.stop = asyncio.Event()
        ready.set()
        await servicer.stop.wait()
        await server.stop(None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    ready.wait(30)
    yield servicer
    loop.call_soon_threadsafe(servicer.stop.set)
    thread.join(30)


def _commands(address: str, tmp_path) -> dict:
    (tmp_path / "src.tgz").write_bytes(b"not much of a bundle")
    return {
        "pull": ["bundle", "pull", "--from", f"grpc://{address}", "--since", "2025-09-01", "--to", "2025-09-02",
                 "--out", f"{tmp_path / 'out'}/"],
        "transfer": ["bundle", "transfer", str(tmp_path / "src.tgz"), f"grpc://{address}"],
        "search": ["search", "hello", "--remote", address],
    }


def _assert_one_clean_line(code: int, err: str) -> None:
    assert code in (1, 2), err
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("logdb: "), err
    assert not _RAW_CONTROL.search(err[:-1]), err


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("command", ["pull", "transfer", "search"])
def test_any_status_with_any_details_is_one_printable_line(hostile, tmp_path, seed, command):
    """Details came out raw: escape sequences reached the terminal, a \\n or \\r faked further lines."""
    rng = random.Random(seed)
    code = rng.choice([c for c in grpc.StatusCode if c != grpc.StatusCode.OK])
    hostile.behaviour = ("abort", code, _nasty_text(rng))
    status, _, err = finished(logdb(tmp_path, *_commands(hostile.address, tmp_path)[command]))
    _assert_one_clean_line(status, err)
    assert code.name in err


def test_a_bundle_stream_without_any_message_is_one_line(hostile, tmp_path):
    """It was a StopIteration traceback."""
    hostile.behaviour = ("empty",)
    status, _, err = finished(logdb(tmp_path, *_commands(hostile.address, tmp_path)["pull"]))
    _assert_one_clean_line(status, err)
    assert "without announcing a bundle" in err and list((tmp_path / "out").glob("*")) == []


@pytest.mark.parametrize("info", [
    logs_pb2.BundleInfo(file_name="a.tgz", total_bytes=3, sha256="\x1b]0;pwned\x07"),
    logs_pb2.BundleInfo(file_name="a.tgz", total_bytes=-5, sha256="0" * 64),
    logs_pb2.BundleInfo(),
])
def test_a_malformed_announcement_is_refused_before_a_byte_is_written(hostile, tmp_path, info):
    """The server's sha256 was quoted raw in the mismatch message, and a negative size was believed."""
    hostile.behaviour = ("info", info)
    status, _, err = finished(logdb(tmp_path, *_commands(hostile.address, tmp_path)["pull"]))
    _assert_one_clean_line(status, err)
    assert "announced no usable bundle" in err and not (tmp_path / "out").exists()


def test_a_stream_that_stalls_after_its_announcement_ends_the_pull(hostile, tmp_path):
    """The pull waited for the next chunk for as long as the connection stayed up."""
    hostile.behaviour = ("stall", logs_pb2.BundleInfo(file_name="a.tgz", total_bytes=10, sha256="0" * 64))
    process = logdb(tmp_path, *_commands(hostile.address, tmp_path)["pull"], "--idle-timeout", "0.5")
    _, err = process.communicate(timeout=30)
    _assert_one_clean_line(process.returncode, err)
    assert "sent nothing for 0.5 s" in err and list((tmp_path / "out").iterdir()) == []


def test_a_server_that_takes_none_of_the_upload_ends_the_transfer(hostile, tmp_path):
    """The transfer waited for as long as the connection stayed up. 16 MiB: more than gRPC's flow
    control lets through unread."""
    hostile.behaviour = ("empty",)
    command = _commands(hostile.address, tmp_path)["transfer"]
    (tmp_path / "src.tgz").write_bytes(random.Random(0).randbytes(16 << 20))
    process = logdb(tmp_path, *command, "--idle-timeout", "0.5")
    _, err = process.communicate(timeout=30)
    _assert_one_clean_line(process.returncode, err)
    assert "took no more of the upload for 0.5 s" in err


@pytest.mark.parametrize("offset", [-7, 1 << 40])
def test_an_upload_offset_that_cannot_be_is_refused_before_a_byte_is_sent(hostile, tmp_path, offset):
    """-7 was 'UNKNOWN: Exception iterating requests!'; 2^40 sent no byte, and the transfer could succeed."""
    hostile.behaviour = ("offset", offset)
    status, _, err = finished(logdb(tmp_path, *_commands(hostile.address, tmp_path)["transfer"]))
    _assert_one_clean_line(status, err)
    assert f"says it holds {offset} bytes" in err


def test_a_transfer_reply_is_one_printable_line(hostile, tmp_path):
    """A newline in a value the server sent printed a line of its own (`fake=1`)."""
    hostile.behaviour = ("reply", logs_pb2.ImportBundleResponse(complete=True, bundle_id="\x1b[2J\nfake=1\r"))
    status, out, _ = finished(logdb(tmp_path, *_commands(hostile.address, tmp_path)["transfer"]))
    assert status == 0 and out.count("\n") == 1 and not _RAW_CONTROL.search(out[:-1]), out
    assert "bundle_id=\\x1b[2J\\nfake=1\\r " in out


@pytest.mark.parametrize("seed", range(2))
def test_search_warnings_are_one_printable_line_each(hostile, tmp_path, seed):
    """They were printed raw: escape sequences reached the terminal."""
    rng = random.Random(seed)
    warnings = [_nasty_text(rng) for _ in range(rng.randint(1, 4))]
    hostile.behaviour = ("warnings", warnings)
    status, _, err = finished(logdb(tmp_path, *_commands(hostile.address, tmp_path)["search"]))
    assert status == 1 and err.count("\n") == len(warnings) and not _RAW_CONTROL.search(err.replace("\n", "")), err


@pytest.mark.parametrize("seed", range(2))
def test_each_search_hit_is_one_line(hostile, tmp_path, seed):
    """A newline in a model name (clients choose it) or an id printed a listing line of its own."""
    rng = random.Random(seed)
    hits = [logs_pb2.RequestSummary(request_id=_nasty_text(rng), ts=_nasty_text(rng), model_original=_nasty_text(rng),
                                    status_code=rng.choice([-(2**31), 0, 200, 2**31 - 1])) for _ in range(rng.randint(1, 5))]
    hostile.behaviour = ("hits", hits)
    status, out, _ = finished(logdb(tmp_path, *_commands(hostile.address, tmp_path)["search"]))
    assert status == 0 and out.count("\n") == len(hits) and not _RAW_CONTROL.search(out.replace("\n", "")), out
