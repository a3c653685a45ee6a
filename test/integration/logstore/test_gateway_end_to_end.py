"""End to end: the real gateway process with live ingestion, a multi-turn conversation through
the official openai SDK, then the same requests found through REST, gRPC and the logdb CLI,
and the conversation back as one dialog."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from aiproxy.testing.gateway import ADMIN_KEY, CLIENT_KEY, GatewayProcess
from aiproxypb.v1 import logs_pb2, logs_pb2_grpc

REPO = Path(__file__).resolve().parents[3]
QUESTIONS = ["tell me about narwhal tusks", "how long do narwhals live", "where do they winter"]


def _until(check, limit_s: float = 20.0):
    deadline = time.monotonic() + limit_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "the log store did not catch up in time"
        time.sleep(0.2)


@pytest.fixture
def gateway(tmp_path):
    with GatewayProcess(tmp_path, env={"LOGDB_ENABLED": "true", "LOGDB_LIVE_INTERVAL_S": "0.2"}) as gw:
        yield gw


def test_conversation_is_searchable_everywhere_and_one_dialog(gateway, tmp_path):
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    messages = []
    for question in QUESTIONS:
        messages.append({"role": "user", "content": question})
        reply = client.chat.completions.create(model="mock", messages=messages)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "narwhal trivia, fresh chat"}])

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def rest_search():
        resp = httpx.get(f"{gateway.root_url}/v1/logs/requests", params={"q": "narwhal*"}, headers=admin, timeout=10)
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        return results if len(results) == 4 else None

    results = _until(rest_search)
    assert {r["model_original"] for r in results} == {"mock"}
    user = httpx.get(f"{gateway.root_url}/v1/logs/requests", params={"q": "narwhal"}, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert user.status_code == 403

    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        metadata = (("authorization", f"Bearer {ADMIN_KEY}"),)
        found = stub.SearchRequests(logs_pb2.SearchRequestsRequest(q="winter"), metadata=metadata)
        assert len(found.results) == 1
        dialog = stub.GetDialog(logs_pb2.GetDialogRequest(dialog_id=found.results[0].dialog_id), metadata=metadata)
        turns = [json.loads(t.request_json)["messages"][-1]["content"] for t in dialog.turns]
        assert turns == QUESTIONS
        with pytest.raises(grpc.RpcError) as denied:
            stub.Stats(logs_pb2.StatsRequest(), metadata=(("authorization", f"Bearer {CLIENT_KEY}"),))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    dialogs = httpx.get(f"{gateway.root_url}/v1/logs/dialogs", headers=admin).json()["dialogs"]
    assert sorted(d["requests"] for d in dialogs) == [1, 3]

    env = {**os.environ, "LOGDB_DIR": str(gateway.log_dir / "db"), "AIPROXY_API_KEY": ADMIN_KEY}
    for extra in ((), ("--remote", gateway.grpc_target)):
        done = subprocess.run(
            [sys.executable, str(REPO / "cmd" / "logdb"), "search", "narwhals", "--json", *extra],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["results"]) == 2  # "how long do narwhals live" and the turn after it


def test_malformed_requests_never_stop_live_ingest(gateway):
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    odd = httpx.post(f"{gateway.base_url}/chat/completions", headers=auth, json={
        "model": "mock", "messages": [{"role": "user", "content": "x", "tool_calls": 5}]})
    assert odd.status_code == 200, odd.text
    assert httpx.post(f"{gateway.base_url}/chat/completions", headers=auth,
                      json={"model": "mock", "messages": 1}).status_code == 400
    later = httpx.post(f"{gateway.base_url}/chat/completions", headers=auth, json={
        "model": "mock", "messages": [{"role": "user", "content": "okapi stripes"}]})
    assert later.status_code == 200

    def found():
        resp = httpx.get(f"{gateway.root_url}/v1/logs/requests", params={"q": "okapi"},
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        return resp.json()["results"]

    assert len(_until(found)) == 1
    stats = httpx.get(f"{gateway.root_url}/v1/logs/stats", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert stats["requests"] == 3, stats


CJK_QUESTIONS = [
    "我们今天讨论数据库的性能问题",  # Chinese
    "データベースの性能を改善したいです",  # Japanese: katakana, hiragana, kanji
    "데이터베이스의 성능 문제를 논의합시다",  # Korean hangul, a particle on the word
    "用GPT模型优化Postgres数据库",  # CJK and Latin without spaces between them
    "วันนี้เราคุยเรื่องฐานข้อมูลและประสิทธิภาพ",  # Thai: no spaces either, vowel signs and tone marks
]


def test_cjk_words_are_found_over_rest(gateway):
    """Chinese and Japanese have no spaces between words, and Korean attaches particles to them: a
    word inside such a run (`数据库`, `データ`, `데이터베이스`) is found, and its snippet shows the
    text as written."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    for question in CJK_QUESTIONS:
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": question}])

    def search(query: str):
        return httpx.get(f"{gateway.root_url}/v1/logs/requests", params={"q": query},
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)

    def snippets(query: str) -> list[str]:
        resp = search(query)
        assert resp.status_code == 200 and "warnings" not in resp.json(), resp.text
        return sorted(r["snippet"] for r in resp.json()["results"])

    _until(lambda: len(snippets("Postgres")) == 1)
    assert snippets("数据库") == ["我们今天讨论[数据库]的性能问题", "用GPT模型优化Postgres[数据库]"]
    assert snippets("データ") == ["[データ]ベースの性能を改善したいです"]
    assert snippets("데이터베이스") == ["[데이터베이스]의 성능 문제를 논의합시다"]
    assert snippets("性能") == ["データベースの[性能]を改善したいです", "我们今天讨论数据库的[性能]问题"]
    assert snippets("GPT模型 Postgres") == ["用[GPT模型]优化[Postgres]数据库"]
    assert snippets("ฐานข้อมูล") == ["วันนี้เราคุยเรื่อง[ฐานข้อมูล]และประสิทธิภาพ"]
    bad = search("数据库 AND")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_query"
    assert bad.json()["error"]["message"].startswith("invalid search query '数据库 AND': fts5: syntax error")
