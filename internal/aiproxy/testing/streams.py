"""A REST chat stream read in a background thread, for tests that do something to the gateway
(a signal, a kill) while a stream is running."""

from __future__ import annotations

import threading

import httpx

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
