"""Request log records as the gateway writes them (design.md, schema aiproxy.request.v1),
and the seed's pretty-printed endpoint log format, for log store tests and benchmarks."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chat_record(
    messages: list[dict],
    answer: str,
    *,
    ts: datetime,
    key: str = "key-a",
    model: str = "gpt-4o",
    mapped: str = "openai/gpt-4o",
    provider: str = "openrouter",
    request_id: str | None = None,
    server_id: str = "srv-test",
    status_code: int = 200,
    stream: bool = False,
) -> dict[str, Any]:
    """One successful (or, with status_code >= 400, failed) chat completion record."""
    ok = status_code < 400
    response = (
        {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12],
            "object": "chat.completion",
            "model": mapped,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        if ok
        else {"error": {"message": answer, "type": "server_error", "code": None}}
    )
    return {
        "schema": "aiproxy.request.v1",
        "request_id": request_id or "req-" + uuid.uuid4().hex,
        "ts": iso(ts),
        "server_id": server_id,
        "transport": "http",
        "endpoint": "/v1/chat/completions",
        "api_key_hash": "kh-" + key,
        "model_original": model,
        "model_mapped": mapped,
        "provider": provider,
        "stream": stream,
        "status_code": status_code,
        "latency_ms": 12.5,
        "ttft_ms": 3.0 if stream else None,
        "usage": response.get("usage") if ok else None,
        "finish_reason": "stop" if ok else None,
        "error": None if ok else response["error"],
        "request": {"model": model, "messages": messages, "stream": stream},
        "response": response,
    }


def conversation(turns: list[tuple[str, str]], *, start: datetime, gap_s: float = 60, **kwargs) -> list[dict]:
    """Records of one multi-turn conversation: each request resends the history plus a new question."""
    records, history = [], []
    for i, (question, answer) in enumerate(turns):
        history.append({"role": "user", "content": question})
        moment = datetime.fromtimestamp(start.timestamp() + i * gap_s, UTC)
        records.append(chat_record(list(history), answer, ts=moment, **kwargs))
        history.append({"role": "assistant", "content": answer})
    return records


def write_jsonl(path: Path, records: list[dict], *, mode: str = "ab") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as out:
        for record in records:
            out.write(orjson.dumps(record) + b"\n")
    return path


def seed_record(record: dict) -> dict:
    """The seed's "API Request/Response" event for a gateway record (request.model is the mapped id)."""
    return {
        "timestamp": record["ts"],
        "endpoint": record["endpoint"],
        "status_code": record["status_code"],
        "latency_ms": record["latency_ms"],
        "request": {**record["request"], "model": record["model_mapped"]},
        "response": record["response"],
        "api_key_hash": str(abs(hash(record["api_key_hash"]))),
        "event": "API Request/Response",
        "level": "info",
        "logger": "endpoint.v1.chat.completions",
    }


def seed_block(event: dict, local_time: str = "2025-09-10 12:00:00") -> str:
    """One record of the seed's endpoint log: prefix plus pretty JSON, as logging wrote it."""
    return f"{local_time} - INFO - {json.dumps(event, indent=2, ensure_ascii=False, default=str)}\n"


def index_as_earlier_versions_did(store_dir: Path) -> None:
    """Make every partition under `store_dir` indexed as versions before unspaced.py: the text as
    written, a run of Chinese or Thai (and so on) one token."""
    from aiproxy.logstore.unspaced import shown

    for part in store_dir.rglob("ai_proxy_*.sqlite3"):
        with sqlite3.connect(part) as conn:
            conn.create_function("shown", 1, shown, deterministic=True)
            conn.execute("UPDATE request_text_index SET content = shown(content)")
        conn.close()


def make_store(db_dir: Path, **settings: Any):
    """A Store on `db_dir` with defaults plus `settings` (LOGDB_* names, lower-case, no prefix)."""
    from aiproxy.logstore.settings import LogStoreSettings
    from aiproxy.logstore.store import Store

    return Store(LogStoreSettings.from_mapping({"dir": str(db_dir), "server_id": "srv-local", **settings}, {}))
