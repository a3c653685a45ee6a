"""A long search query in the URL reaches the log API (aiohttp's own limit, 8 KiB, answered in
plain text before any handler ran)."""

import http.client

import httpx

from aiproxy.httpapi.app import REQUEST_LINE_LIMIT
from aiproxy.testing.gateway import ADMIN_KEY, GatewayProcess


def test_a_20_kb_query_gets_a_json_answer_and_an_over_limit_line_is_refused(tmp_path):
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with GatewayProcess(tmp_path, env={"LOGDB_ENABLED": "true"}) as gateway:
        url = f"{gateway.root_url}/v1/logs/requests"
        long_query = " OR ".join(f"word{i}" for i in range(2500))  # ~20 KB
        answer = httpx.get(url, params={"q": long_query}, headers=admin, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"] == []
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)  # httpx refuses such URLs
        connection.request("GET", "/v1/logs/requests?q=" + "x" * REQUEST_LINE_LIMIT, headers=admin)
        assert connection.getresponse().status == 400
        connection.close()
