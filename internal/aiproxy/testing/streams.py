"""A REST chat stream read in a background thread, for tests that do something to the gateway
(a signal, a kill) while a stream is running; and one that is never read."""

from __future__ import annotations

import socket
import threading

import httpx
import orjson

from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess


class RestStream(threading.Thread):
    """Starts at once and returns when the first SSE line (or an error) has arrived; `lines` holds
    the non-empty lines read so far, `error` what ended the read early, if anything."""

    def __init__(self, gateway: GatewayProcess, request_id: str = "rest-stream", model: str = "gpt-test") -> None:
        super().__init__(daemon=True)
        self.url = f"{gateway.base_url}/chat/completions"
        self.headers = {"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-ID": request_id}
        self.body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        self.lines: list[str] = []
        self.error: Exception | None = None
        self.first = threading.Event()
        self.start()
        assert self.first.wait(10), "the stream did not start"

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url, headers=self.headers, json=self.body, timeout=60) as response:
                for line in response.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.first.set()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc
        self.first.set()


def unread_stream(gateway: GatewayProcess, request_id: str, stream: bool = True) -> socket.socket:
    """A connection that asks for a chat stream (or with stream=False a JSON answer) and will read
    none of it (a small receive buffer, so every buffer on the way fills up soon); close it when done."""
    body = orjson.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", gateway.port))
    client.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-ID: {request_id}\r\n"
                   f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return client
