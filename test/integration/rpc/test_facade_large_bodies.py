"""What the REST facade keeps of a large body while its call runs and while a client reads the answer:
the facade and the ChatService share one process, so every copy it holds adds to the gateway's peak
(docs/benchmarks.md, "Memory for large bodies")."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc

import grpc
import orjson
from aiohttp import web

from aiproxy.config import Settings
from aiproxy.httpapi.app import create_app
from aiproxy.rpc.cell_hop import CellHopServicer
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc, hop_pb2_grpc

SIZE = 8 * 1024 * 1024
LIMIT = 2 * SIZE


class _Servicer(chat_pb2_grpc.ChatServiceServicer):
    """Calls `during(request)` while the facade waits for the answer, then answers `answer`."""

    def __init__(self, during, answer: chat_pb2.ChatCompletion) -> None:
        self.during = during
        self.answer = answer

    async def CreateChatCompletion(self, request, context):
        self.during(request)
        answer, self.answer = self.answer, None  # the test keeps no reference to it
        return answer


@contextlib.asynccontextmanager
async def _facade(servicer):
    size_options = [("grpc.max_receive_message_length", LIMIT), ("grpc.max_send_message_length", LIMIT)]
    server = grpc.aio.server(options=size_options)
    chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server)
    hop = CellHopServicer()  # the facade's small calls come through it
    hop.carry(grpc.unary_unary_rpc_method_handler(servicer.CreateChatCompletion,
                                                  chat_pb2.ChatCompletionRequest.FromString),
              grpc.unary_stream_rpc_method_handler(servicer.StreamChatCompletionBatches,
                                                   chat_pb2.ChatCompletionRequest.FromString))
    hop_pb2_grpc.add_CellHopServicer_to_server(hop, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=size_options)
    runner = web.AppRunner(create_app(Settings(max_body_bytes=LIMIT - 1024 * 1024), channel, None))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()
        await channel.close()
        await server.stop(None)


def _head(body_size: int, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {body_size}"
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{framing}\r\n"
            "\r\n").encode()


def test_a_large_request_body_is_not_held_by_the_facade_during_its_call():
    """aiohttp's request.read() keeps the bytes it read on the request until the response is sent
    (after copying them from the bytearray it read into), and the handler kept the parsed body too:
    with its message and the message's serialisation, four copies of the body alive in the facade
    while the ChatService and the upstream worked on a fifth and sixth."""
    text = "lorem ipsum " * (SIZE // 12)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
    held: list[int] = []

    def during(request) -> None:
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0] - base)

    async def scenario() -> bytes:
        async with _facade(_Servicer(during, chat_pb2.ChatCompletion(id="small"))) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_head(len(body)))
            for start in range(0, len(body), 65536):  # a body that arrives after its head
                writer.write(body[start:start + 65536])
                await writer.drain()
            answer = await reader.read(200)
            writer.close()
            return answer

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0] + len(body)  # the test's own copy
        answer = asyncio.run(scenario())
    finally:
        tracemalloc.stop()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    # What stays is the message's serialisation, which the gRPC call keeps until it ends.
    assert held and held[0] < 1.5 * len(body), f"{held[0] / len(body):.1f} copies of the body held during the call"


def test_a_large_answer_is_held_only_as_its_json_while_the_client_reads_it():
    """The handler kept the answer's message (its call kept it too) while a client read the answer's
    JSON, for as long as it took, up to twice REQUEST_BODY_TIMEOUT_SECONDS for one reading nothing."""
    servicer = _Servicer(lambda request: None, chat_pb2.ChatCompletion(
        id="big", choices=[{"message": {"content_text": "x" * SIZE}}]))

    def answers_alive() -> int:
        gc.collect()
        return sum(type(item) is chat_pb2.ChatCompletion for item in gc.get_objects())

    async def scenario() -> tuple[bytes, int]:
        async with _facade(servicer) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_head(2) + b"{}")
            head = await reader.readuntil(b"\r\n\r\n")  # then reads nothing: the facade's write waits
            await asyncio.sleep(0.3)
            alive = answers_alive()
            writer.close()
            return head, alive

    head, alive = asyncio.run(scenario())
    assert head.startswith(b"HTTP/1.1 200"), head
    assert alive == 0, "the answer's message is held while the client reads its JSON"
