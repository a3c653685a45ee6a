"""Helpers for bundle tests and benchmarks: stores with conversations in them, re-packing a
bundle with edited members (to tamper with it for real), and fingerprints of a directory."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from aiproxy.logstore.ingest import ingest
from aiproxy.testing.logrecords import conversation, make_store, write_jsonl

T0 = datetime(2025, 9, 5, 12, 0, tzinfo=UTC)  # a Friday: a few days span two ISO weeks


def filled_store(base: Path, *, server_id: str = "srv-a", days: int = 3, turns: int = 3, start: datetime = T0,
                 topic: str = "sailing", **settings):
    """A store (closed connections) holding one `turns`-turn conversation per day for `days` days."""
    records = []
    for day in range(days):
        questions = [(f"day {day} question {i} about {topic}", f"answer {i} on {topic}") for i in range(turns)]
        records += conversation(questions, start=start + timedelta(days=day), server_id=server_id, key=server_id)
    write_jsonl(Path(base).parent / f"{Path(base).name}-logs" / "requests.jsonl", records, mode="wb")
    store = make_store(base, server_id=server_id, **settings)
    ingest(store, Path(base).parent / f"{Path(base).name}-logs")
    store.close()
    return store


def read_members(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(bundle, "r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]


def write_members(bundle: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(bundle, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return bundle


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def repack(bundle: Path, out: Path, edit: Callable[[str, bytes], bytes | None] = lambda n, d: d,
           *, fix_metadata: bool = False, metadata: Callable[[dict], dict] = lambda m: m) -> Path:
    """Copy a bundle, passing each file's bytes through `edit` (None drops the member). With
    `fix_metadata`, metadata.json is rewritten to match the edited members (a consistent but
    forged bundle); `metadata` may change the metadata object further."""
    members = []
    for info, data in read_members(bundle):
        if info.name == "metadata.json":
            continue
        edited = edit(info.name, data)
        if edited is not None:
            members.append((info, edited))
    meta = orjson.loads(dict((i.name, d) for i, d in read_members(bundle))["metadata.json"])
    if fix_metadata:
        for entry in meta["files"]:
            data = next((d for i, d in members if i.name == entry["path"]), None)
            if data is not None:
                entry["sha256"], entry["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    members.append(member("metadata.json", orjson.dumps(metadata(meta))))
    return write_members(out, members)


def seed_weekly(bundle: Path, out: Path, copies: int = 7) -> Path:
    """A copy of `bundle` as the seed wrote a weekly one: every db/ member archived, and listed
    in metadata.json, `copies` times over (once per day of the range)."""
    members, meta = [], None
    for info, data in read_members(bundle):
        if info.name == "metadata.json":
            meta = orjson.loads(data)
        else:
            members += [(info, data)] * (copies if info.name.startswith("db/") else 1)
    meta["files"] = [e for e in meta["files"] for _ in range(copies if e["path"].startswith("db/") else 1)]
    return write_members(out, [*members, member("metadata.json", orjson.dumps(meta))])


def tree_fingerprint(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, except what a mere reader of a WAL database leaves
    behind: the shared-memory file and an empty -wal file (a reader killed before closing)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file() and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and not p.stat().st_size)
    }


# Ways a partition file gets damaged, as `damage_partition` applies them.
DAMAGES = ("truncated", "zero_filled", "not_a_database", "damaged_pages", "schema_not_utf8", "empty", "unopenable",
           "no_permission")


def damage_partition(path: Path, how: str) -> None:
    """Damage a (closed) partition file for real: cut it in half, overwrite it with zeros or text,
    overwrite every page after the first two (schema intact, b-trees garbage), flip one byte of its
    schema's text to one that is not UTF-8 (SQLite's error then quotes it), empty it (an hour
    ago: not a file being created), put a directory in its place (what SQLite cannot open, even as
    root), or take every permission away (only stops a process that is not root)."""
    path = Path(path)
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        extra.unlink(missing_ok=True)
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero_filled":
        path.write_bytes(bytes(len(data)))
    elif how == "not_a_database":
        path.write_bytes(b"this is not an SQLite file\n" * (len(data) // 27 + 1))
    elif how == "damaged_pages":
        page = int.from_bytes(data[16:18], "big")
        path.write_bytes(data[: 2 * page] + b"\xab" * (len(data) - 2 * page))
    elif how == "schema_not_utf8":
        statement = data.index(b'CREATE TABLE "servers"')
        path.write_bytes(data[: statement + 6] + b"\xaf" + data[statement + 7 :])
    elif how == "empty":
        path.write_bytes(b"")
        os.utime(path, (os.path.getatime(path) - 3600, os.path.getmtime(path) - 3600))
    elif how == "unopenable":
        path.unlink()
        path.mkdir()
    elif how == "no_permission":
        path.chmod(0)
    else:
        raise ValueError(f"unknown damage {how!r}")
