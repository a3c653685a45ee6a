"""Seeded random damage to a real bundle: bytes flipped in the gzip stream, in tar headers, in
members and in metadata.json; cuts; members dropped, repeated, reordered, added, renamed to other
days or replaced by links and devices; metadata that lies; partition members with another schema,
triggers, views or a damaged index (their sums recomputed: a forged bundle).

Every variant: `verify` either refuses it or accepts it; `import` either refuses it, leaving the
destination byte for byte as it was, or imports it, after which the store still answers searches;
an undamaged-looking (not forged) variant that imports gives exactly the original rows; a variant
verify refuses is never imported; nothing is written outside the destination. A few variants go
through real `logdb` processes: the documented exit code, one line on stderr, no traceback.
Each seed runs CASES library cases; a failure names seed and case."""

import contextlib
import gzip
import hashlib
import io
import os
import random
import sqlite3
import subprocess
import sys
import tarfile
from datetime import date
from pathlib import Path

import orjson
import pytest

from aiproxy.logstore.bundles.create import create_bundle
from aiproxy.logstore.bundles.importer import import_bundle
from aiproxy.logstore.bundles.manifest import BundleError, UnusableInput
from aiproxy.logstore.bundles.verify import scan_bundle
from aiproxy.logstore.search import search
from aiproxy.testing.bundles import filled_store, read_members, tree_fingerprint
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label
from aiproxy.testing.logdb_processes import REPO
from aiproxy.testing.logrecords import make_store

SEEDS = fuzz_seeds(1, 4)
CASES = 20  # per seed: ~0.03 s each
CLI_SEEDS = fuzz_seeds(11, 2)  # one variant each through real processes (~1.5 s each)

SQL_EDITS = (
    "CREATE TRIGGER t AFTER INSERT ON requests BEGIN DELETE FROM servers; END",
    "CREATE VIEW v AS SELECT * FROM requests",
    "ALTER TABLE requests RENAME TO r2; CREATE VIEW requests AS SELECT * FROM r2",
    "DROP TABLE request_text_index",
    "DELETE FROM request_text_index_data WHERE id > 1",
    "UPDATE request_text_index_data SET block = randomblob(length(block)) WHERE id > 10",
    "CREATE TABLE extra(x); INSERT INTO extra VALUES (1)",
    "UPDATE requests SET ts = 'x'",
    "UPDATE requests SET ts = ts + 86400 * 400",
    "UPDATE requests SET request_id = request_id || char(10) || char(0)",
    "UPDATE requests SET model_original = CAST(X'c3' AS TEXT)",
    "PRAGMA user_version = 99",
    "DROP TABLE servers",
    "DROP TABLE requests; CREATE TABLE requests(a, b)",
    "CREATE INDEX extra_index ON requests(request_id, server_id, ts)",
    "UPDATE requests SET dialog_id = 'x' || rowid",
)
KINDS = ("gzip_flip", "gzip_cut", "tar_flip", "header_flip", "tar_cut", "tar_insert", "drop", "repeat", "repeat_other",
         "reorder", "extra", "lie", "special", "rename", "schema", "member_flip", "metadata_flip")
OTHER_NAMES = ("db/2025/09/ai_proxy_20250901.sqlite3", "db/2030/01/ai_proxy_20300101.sqlite3",
               "db/2025/W36/ai_proxy_2025W36.sqlite3", "db/2025/M09/ai_proxy_202509.sqlite3",
               "db/2025/09/ai_proxy_2025090.sqlite3", "db/x/ai_proxy_20250905.sqlite3", "db/../../escape.sqlite3",
               "/tmp/absolute.sqlite3", "raw/../../escape.jsonl", "raw/requests.jsonl", "other.txt", "db/notes.txt")




class Variant:
    """One damaged copy of the bundle: `forged` when its sums were recomputed (the rows it carries
    may differ from the original's, undetectably)."""

    def __init__(self, kind: str, data: bytes, forged: bool = False) -> None:
        self.kind, self.data, self.forged = kind, data, forged


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _flip(rng: random.Random, data: bytes, flips: int, start: int = 0, end: int | None = None) -> bytes:
    damaged = bytearray(data)
    for _ in range(flips):
        damaged[rng.randrange(start, len(data) if end is None else end)] ^= rng.randint(1, 255)
    return bytes(damaged)


def _edit_metadata(members, change) -> None:
    index = next(i for i, (info, _) in enumerate(members) if info.name == "metadata.json")
    meta = orjson.loads(members[index][1])
    change(meta)
    members[index] = (members[index][0], orjson.dumps(meta))


def _recompute_sums(meta: dict, members) -> None:
    for entry in meta["files"]:
        data = next((d for info, d in members if info.name == entry["path"] and d is not None), None)
        if data is not None:
            entry["sha256"], entry["bytes"] = hashlib.sha256(data).hexdigest(), len(data)


def _sqlite_edit(tmp: Path, data: bytes, sql: str) -> bytes:
    path = tmp / "edited.sqlite3"
    path.write_bytes(data)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(sql)
        conn.commit()
    data = path.read_bytes()
    path.unlink()
    return data


def _metadata_lie(rng: random.Random, meta: dict) -> None:
    entry = rng.choice(meta["files"])
    field, value = rng.choice([
        ("sha256", "0" * 64), ("sha256", None), ("sha256", "A" * 64), ("bytes", entry["bytes"] + rng.choice((-1, 1))),
        ("bytes", 10**12), ("rows", rng.choice((0, -1, 10**9, "x", None))), ("path", "db/../../" + entry["path"]),
        ("path", "/" + entry["path"]), ("path", "db/2024/01/ai_proxy_20240101.sqlite3"),
    ])
    if rng.random() < 0.5:
        entry[field] = value
        return
    key, value = rng.choice([
        ("since", "garbage"), ("to", 5), ("schema_version", rng.choice((None, "v1", -3, 2.5, "abc", True, 2**63 - 1))),
        ("server_id", rng.choice(("", "x" * 10000, 5, None, "a\nb"))), ("bundle_id", rng.choice(("", [1], None))),
        ("format", rng.choice((None, 1, "aiproxy.logbundle.v2"))), ("files", rng.choice(({}, None, "x", [None]))),
        ("rows", 10**9), ("granularity", "hourly"), ("created_at", None),
    ])
    meta[key] = value


def damaged(rng: random.Random, original: bytes, members, tmp: Path, kind: str | None = None) -> Variant:
    """A random damaged variant (of `kind`, else any) of the bundle `original`, whose members are `members`."""
    members = list(members)
    db = [i for i, (info, _) in enumerate(members) if info.name.startswith("db/")]
    kind = KINDS[rng.randrange(len(KINDS))] if kind is None else kind
    forged = False
    if kind == "gzip_flip":
        return Variant(kind, _flip(rng, original, rng.randint(1, 4), start=10))
    if kind == "gzip_cut":
        return Variant(kind, original[: rng.randrange(len(original))])
    tar = gzip.decompress(original)
    if kind == "tar_flip":
        return Variant(kind, gzip.compress(_flip(rng, tar, rng.randint(1, 8)), mtime=0))
    if kind == "header_flip":
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            header = rng.choice(archive.getmembers()).offset
        return Variant(kind, gzip.compress(_flip(rng, tar, rng.randint(1, 3), header, header + 512), mtime=0))
    if kind == "tar_cut":
        return Variant(kind, gzip.compress(tar[: rng.randrange(len(tar))], mtime=0))
    if kind == "tar_insert":
        at = rng.randrange(len(tar))
        return Variant(kind, gzip.compress(tar[:at] + rng.randbytes(rng.choice((1, 7, 512))) + tar[at:], mtime=0))
    if kind == "drop":
        del members[rng.randrange(len(members))]
    elif kind == "repeat":
        members.insert(rng.randrange(len(members) + 1), members[rng.randrange(len(members))])
    elif kind == "repeat_other":
        info, data = members[rng.choice(db)]
        members.insert(rng.randrange(len(members) + 1), (tarfile.TarInfo(info.name), _flip(rng, data, 1)))
    elif kind == "reorder":
        rng.shuffle(members)
    elif kind == "extra":
        name, data = rng.choice(OTHER_NAMES), rng.choice((b"hello\n", members[db[0]][1]))
        members.insert(rng.randrange(len(members) + 1), (tarfile.TarInfo(name), data))
        if rng.random() < 0.5:  # and listed, with its true sum
            forged = True
            _edit_metadata(members, lambda meta: meta["files"].append(
                {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}))
    elif kind == "lie":
        _edit_metadata(members, lambda meta: _metadata_lie(rng, meta))
        forged = True  # (a row count or a range may lie harmlessly)
    elif kind == "special":
        info = tarfile.TarInfo(rng.choice([members[i][0].name for i in db] + list(OTHER_NAMES[:2])))
        info.type = rng.choice((tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
                                tarfile.FIFOTYPE, tarfile.DIRTYPE))
        info.linkname = rng.choice(("/etc/passwd", "../../x", members[db[0]][0].name))
        if rng.random() < 0.5:
            members = [m for m in members if m[0].name != info.name]
        members.insert(rng.randrange(len(members) + 1), (info, None))
    elif kind == "rename":
        i, name = rng.choice(db), rng.choice(OTHER_NAMES[:6])
        old = members[i][0].name
        members[i] = (tarfile.TarInfo(name), members[i][1])
        _edit_metadata(members, lambda meta: [e.update(path=name) for e in meta["files"] if e["path"] == old])
    elif kind in ("schema", "member_flip"):
        i = rng.choice(db)
        if kind == "schema":
            sql = rng.choice(SQL_EDITS)
            kind = f"schema {sql!r}"
            members[i] = (members[i][0], _sqlite_edit(tmp, members[i][1], sql))
        else:
            members[i] = (members[i][0], _flip(rng, members[i][1], rng.randint(1, 20)))
        _edit_metadata(members, lambda meta: _recompute_sums(meta, members))
        forged = True
    elif kind == "metadata_flip":
        i = next(i for i, (info, _) in enumerate(members) if info.name == "metadata.json")
        members[i] = (members[i][0], _flip(rng, members[i][1], rng.randint(1, 3)))
        forged = True  # a flip inside a value no sum covers (created_at, bundle_id) is harmless
    return Variant(kind, gzip.compress(_tar(members), mtime=0), forged)


def _rows(base: Path) -> list:
    found = []
    for path in sorted(base.rglob("ai_proxy_*.sqlite3")):
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            conn.text_factory = bytes
            found += conn.execute("SELECT request_id, server_id, ts_iso, request_json, response_json FROM requests")
    return sorted(found)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The bundle of three days of srv-a, a destination holding two of them (srv-b's rows), and
    the rows an import of the intact bundle leaves there."""
    root = tmp_path_factory.mktemp("fuzz")
    source = filled_store(root / "a", server_id="srv-a", days=3)
    bundle = create_bundle(source, date(2025, 9, 1), date(2025, 9, 30), root / "a.tgz").path
    source.close()
    filled_store(root / "b", server_id="srv-b", days=2).close()
    expected = sorted(_rows(root / "b") + _rows(root / "a"))
    return root, bundle.read_bytes(), read_members(bundle), expected


@pytest.mark.parametrize("seed", SEEDS)
def test_damaged_bundles_are_refused_whole_or_imported_whole(world, tmp_path, seed):
    root, original, members, expected = world
    rng = random.Random(seed)
    for case in range(CASES):
        variant = damaged(rng, original, members, tmp_path, KINDS[(case + seed) % len(KINDS)])  # each kind, in turn
        where = f"{seed_label(seed)} case {case} {variant.kind}"
        work = tmp_path / f"case-{case}"
        work.mkdir()
        path = work / "damaged.tgz"
        path.write_bytes(variant.data)
        dest = work / "dest"
        subprocess.run(["cp", "-a", str(root / "b"), str(dest)], check=True)
        fingerprint, around = tree_fingerprint(dest), _files(tmp_path) - _files(dest)
        try:
            verdict = "ok" if scan_bundle(path).ok else "bad"
        except UnusableInput:
            verdict = "unusable"
        store = make_store(dest, server_id="srv-b")
        try:
            import_bundle(path, store)
        except BundleError as exc:
            assert tree_fingerprint(dest) == fingerprint, f"{where}: a refused import changed the store ({exc})"
            assert verdict != "ok" or variant.forged, f"{where}: verify accepted it, import refused: {exc}"
        else:
            assert verdict == "ok", f"{where}: imported a bundle verify calls {verdict}"
            search(store, "", limit=500), search(store, "sailing", limit=500)  # the store still reads
            assert variant.forged or _rows(dest) == expected, f"{where}: imported other rows than the bundle's"
        finally:
            store.close()
        assert _files(tmp_path) - _files(dest) == around | {path}, f"{where}: a file written outside the store"
        subprocess.run(["rm", "-rf", str(work)], check=True)


@pytest.mark.parametrize("seed", CLI_SEEDS)
def test_damaged_bundles_through_logdb_exit_as_documented_in_one_line(world, tmp_path, seed):
    root, original, members, _ = world
    rng = random.Random(seed)
    variant = damaged(rng, original, members, tmp_path)
    where = f"{seed_label(seed)} {variant.kind}"
    path = tmp_path / "damaged.tgz"
    path.write_bytes(variant.data)
    subprocess.run(["cp", "-a", str(root / "b"), str(tmp_path / "dest")], check=True)
    fingerprint = tree_fingerprint(tmp_path / "dest")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGDB_")}
    codes = []
    for args in (["verify", str(path)], ["import", str(path), "--dest", str(tmp_path / "dest")]):
        done = subprocess.run([sys.executable, str(REPO / "cmd" / "logdb"), "bundle", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert "Traceback" not in done.stderr, f"{where}: {done.stderr}"
        assert done.returncode in (0, 1, 2), f"{where}: exit {done.returncode}"
        if done.returncode == 1 and args[0] == "verify":  # its problems, one a line, then fail
            assert done.stdout.splitlines()[-1] == "fail" and not done.stderr, f"{where}: {done.stdout!r}"
        elif done.returncode:
            lines = done.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("logdb: "), f"{where}: {done.stderr!r}"
        codes.append(done.returncode)
    if codes[1]:
        assert tree_fingerprint(tmp_path / "dest") == fingerprint, f"{where}: a refused import changed the store"
    assert codes[0] or not codes[1] or variant.forged, f"{where}: verify {codes[0]}, import {codes[1]}"
