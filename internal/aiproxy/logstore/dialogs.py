"""Dialog grouping: threading by content, with the seed's time-window rule as the fallback.

A request continues the earlier request (same key, within LOGDB_DIALOG_LOOKBACK_DAYS) whose
messages plus answer are exactly its own messages up to its last assistant turn, and joins
that request's dialog: across model switches, pauses and partition boundaries. If no request
matches the whole history, one matching the last exchange is taken (clients trim history).
When several earlier requests match (identical parallel conversations), the latest one not
yet continued wins, so parallel conversations with the same key stay apart. A request that
continues none and whose history holds no earlier exchange starts a dialog: a first turn (no
assistant message), or a conversation that opens with an assistant greeting (chat UIs send
`[system, assistant "How can I help?", user …]`). Only requests without chat messages, and
continuations whose parent was never logged (their history holds an exchange no stored request
matches), use the seed's rule: same key, endpoint and mapped model, at most `--window` after
the previous such request.

Rows are processed in (ts, ts_iso, request_id) order and each decision depends only on earlier rows,
so ids are deterministic and re-running over the same rows updates nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from aiproxy.logstore.damage import Unreadable, skipping
from aiproxy.logstore.fragments import holds_exchange
from aiproxy.logstore.partitions import day_of
from aiproxy.logstore.settings import WINDOW
from aiproxy.logstore.sqltools import chunked, in_list
from aiproxy.logstore.store import Store
from aiproxy.logstore.wal_limit import limit_wal

CHUNK = 1000
DEFAULT_WINDOW_S = 1800


MAX_WINDOW_S = 3650 * 86400  # ten years: beyond, `ts - window` leaves SQLite's 64-bit integers


def parse_window(text: str | None, *, strict: bool = False) -> int:
    """Seed rules: Ns, Nm, Nh, bare seconds; `…ms` is 1 s; unparsable is 30 min; at least 1 and
    at most MAX_WINDOW_S (strict: a longer one is a ValueError, for a command line to refuse)."""
    raw = (text or "").strip().lower()
    m = WINDOW.fullmatch(raw)
    if not m:
        return DEFAULT_WINDOW_S
    if m.group(1) is None:  # `…ms`
        return 1
    seconds = max(1, int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)])
    if seconds > MAX_WINDOW_S and strict:
        raise ValueError(f"{text!r} is longer than the longest window, {MAX_WINDOW_S // 86400} days")
    return min(seconds, MAX_WINDOW_S)


def window_dialog_id(
    api_key_hash: str | None, endpoint: str | None, model_mapped: str | None, first_ts: int
) -> str:
    """The seed's formula: dlg- + 16 hex of sha256("<key>|<endpoint>|<model>|<first_ts>")."""
    key = f"{api_key_hash or ''}|{endpoint or ''}|{model_mapped or ''}|{first_ts}"
    return "dlg-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def thread_dialog_id(root_request_id: str, root_server_id: str) -> str:
    """A conversation's id comes from its first request, so two conversations never share one."""
    return "dlg-" + hashlib.sha256(f"thread|{root_server_id}|{root_request_id}".encode()).hexdigest()[:16]


_COLUMNS = (
    "ts, COALESCE(ts_iso, ''), request_id, server_id, api_key_hash, endpoint, model_mapped, thread_prefix_hash, thread_next_hash,"
    " thread_tail_prefix_hash, thread_tail_next_hash, dialog_id, dialog_parent_id"
)


@dataclass(slots=True)
class _Entry:
    ts: int
    ts_iso: str  # µs precision: requests of one second still come in order
    request_id: str
    server_id: str
    api_key_hash: str | None
    endpoint: str | None
    model_mapped: str | None
    prefix: str | None
    next: str | None
    tail_prefix: str | None
    tail_next: str | None
    dialog_id: str | None
    parent: str | None

    @property
    def order(self) -> tuple[int, str, str]:
        return (self.ts, self.ts_iso, self.request_id)

    @property
    def key(self) -> tuple[str, str]:
        return (self.request_id, self.server_id)

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.api_key_hash or "", self.endpoint or "", self.model_mapped or "")


class _Assigner:
    def __init__(self, store: Store, window_s: int, unreadable: Unreadable | None = None) -> None:
        self.store = store
        self.window_s = window_s
        self.lookback_s = store.settings.dialog_lookback_days * 86400
        self.partitions = store.existing()  # listed once per run; rows only land in existing files
        self.updated = 0
        self.unreadable = unreadable

    def _may_depend_on_unreadable(self, row: _Entry) -> bool:
        """Whether an earlier request this row's decision may rest on (its parent, a request that
        continued that parent, the window rule's last request) is in a partition left out."""
        if not self.unreadable:
            return False
        return self.unreadable.overlaps(day_of(max(0, row.ts - max(self.lookback_s, self.window_s))), day_of(row.ts))

    def _query(self, first_ts: int, last_ts: int, where: str, args: list) -> list[_Entry]:
        since, to = day_of(max(0, first_ts)), day_of(last_ts)
        out = []
        for part in self.partitions:
            if part.overlaps(since, to):
                with skipping(self.unreadable), self.store.connected(part.path) as db:
                    out.extend(
                        _Entry(*row)
                        for row in db.execute_sql(f"SELECT {_COLUMNS} FROM requests WHERE {where}", args)
                    )
        return out

    def _lookup(self, first_ts: int, last_ts: int, column: str, values: set[str]) -> list[_Entry]:
        found = []
        ordered = sorted(v for v in values if v)
        for chunk in chunked(ordered):
            marks, args = in_list(chunk)
            found += self._query(first_ts, last_ts, f"{column} IN {marks}", args)
        return found

    def late_parent_ts(self, since: date | None) -> int | None:
        """The earliest row without a dialog yet (new) that a row grouped before it continues, or None.
        Ingest may store a turn after its continuation (two workers' or servers' files, one read
        before the other wrote that turn): the continuation found no parent then, and it and the
        rows after it must be grouped again for the dialog a full `dialogs assign` would give."""
        first_new = None
        for part in self.store.existing(since, None):
            with skipping(self.unreadable), self.store.connected(part.path) as db:
                (ts,) = db.execute_sql("SELECT MIN(ts) FROM requests WHERE dialog_id IS NULL").fetchone()
            if ts is not None:
                first_new = ts if first_new is None else min(first_new, ts)
        if first_new is None:
            return None
        continued: list[int] = []
        for part in self.store.existing(day_of(first_new), None):  # a partition's orphans at a time
            with skipping(self.unreadable), self.store.connected(part.path) as db:
                orphans = [_Entry(*row) for row in db.execute_sql(
                    f"SELECT {_COLUMNS} FROM requests WHERE ts >= ? AND dialog_id IS NOT NULL"
                    " AND dialog_parent_id IS NULL AND thread_prefix_hash != ''", (first_new,))]
            if orphans:
                continued += self._new_parents(orphans)
        return min(continued, default=None)

    def _new_parents(self, orphans: list[_Entry]) -> list[int]:
        """The ts of each row without a dialog yet that one of `orphans` continues."""
        first, last = min(o.ts for o in orphans) - self.lookback_s, max(o.ts for o in orphans)
        found = []
        for column, hash_of, parent_hash in (("thread_next_hash", "prefix", "next"),
                                             ("thread_tail_next_hash", "tail_prefix", "tail_next")):
            waiting: dict[str, list[_Entry]] = {}
            for orphan in orphans:
                if getattr(orphan, hash_of):
                    waiting.setdefault(getattr(orphan, hash_of), []).append(orphan)
            for parent in self._lookup(first, last, column, set(waiting)):
                found += [
                    parent.ts
                    for orphan in waiting[getattr(parent, parent_hash)]
                    if parent.dialog_id is None
                    and parent.api_key_hash == orphan.api_key_hash
                    and orphan.ts - self.lookback_s <= parent.ts
                    and parent.order < orphan.order
                ]
        return found

    def _holds_exchange(self, path: Path, row: _Entry) -> bool:
        """Read only for requests that continue no stored one: the hashes cannot tell a history
        with an unlogged exchange from one that opens with an assistant greeting."""
        with self.store.connected(path) as db:
            found = db.execute_sql(
                "SELECT request_json FROM requests WHERE request_id = ? AND server_id = ?", (row.request_id, row.server_id)
            ).fetchone()
        try:
            return found is not None and holds_exchange(orjson.loads(found[0] or "null"))
        except orjson.JSONDecodeError:
            return True  # as before this check: the window rule

    def chunk(self, path: Path, rows: list[_Entry]) -> list[_Entry]:
        """Decide dialog_id and parent for rows (sorted, all in the partition at `path`); returns
        the rows whose values changed."""
        first, last = rows[0].ts - self.lookback_s, rows[-1].ts
        in_chunk = {r.key for r in rows}
        stored = [
            e
            for e in self._lookup(first, last, "thread_next_hash", {r.prefix for r in rows})
            if e.key not in in_chunk
        ]
        stored_tail = [
            e
            for e in self._lookup(first, last, "thread_tail_next_hash", {r.tail_prefix for r in rows})
            if e.key not in in_chunk
        ]
        by_next: dict[str, list[_Entry]] = {}
        by_tail: dict[str, list[_Entry]] = {}
        for entry in stored:
            by_next.setdefault(entry.next, []).append(entry)
        for entry in stored_tail:
            by_tail.setdefault(entry.tail_next, []).append(entry)
        parent_ids = {e.request_id for e in stored + stored_tail}
        claims: dict[str, list[tuple[int, str, str]]] = {}
        for child in self._lookup(first, last, "dialog_parent_id", parent_ids):
            if child.key not in in_chunk:
                claims.setdefault(child.parent, []).append(child.order)
        changed = []
        for row in rows:
            old = (row.dialog_id, row.parent)
            parent = self._parent(row, by_next.get(row.prefix or "", ()), claims) or self._parent(
                row, by_tail.get(row.tail_prefix or "", ()), claims
            )
            if parent is not None:
                row.parent = parent.request_id
                row.dialog_id = parent.dialog_id or thread_dialog_id(parent.request_id, parent.server_id)
                claims.setdefault(parent.request_id, []).append(row.order)
            elif row.prefix == "" or (row.prefix is not None and not self._holds_exchange(path, row)):
                # A first turn, or one after an assistant greeting: a conversation of its own,
                # which the window rule would glue to whatever the same key sent last.
                row.parent, row.dialog_id = None, thread_dialog_id(row.request_id, row.server_id)
            else:
                row.parent, row.dialog_id = None, self._window_dialog(row, rows, in_chunk)
            if old[0] is not None and self._may_depend_on_unreadable(row):
                # Its parent may be in the partition that cannot be read: keep what was decided
                # with it (a re-run after the file is restored decides again).
                row.dialog_id, row.parent = old
            if row.next:
                by_next.setdefault(row.next, []).append(row)
            if row.tail_next:
                by_tail.setdefault(row.tail_next, []).append(row)
            if (row.dialog_id, row.parent) != old:
                changed.append(row)
        return changed

    def _parent(self, row: _Entry, candidates, claims) -> _Entry | None:
        usable = [
            c
            for c in candidates
            if c.order < row.order and c.ts >= row.ts - self.lookback_s and c.api_key_hash == row.api_key_hash
        ]
        if not usable:
            return None
        free = [c for c in usable if not any(o < row.order for o in claims.get(c.request_id, ()))]
        return max(free or usable, key=lambda c: c.order)

    def _window_dialog(self, row: _Entry, chunk_rows: list[_Entry], in_chunk: set) -> str:
        start = row.ts - self.window_s
        earlier = [e for e in chunk_rows if start <= e.ts and e.order < row.order and e.group == row.group]
        where = "api_key_hash IS ? AND endpoint IS ? AND model_mapped IS ? AND ts BETWEEN ? AND ? AND dialog_id IS NOT NULL"
        args = [row.api_key_hash, row.endpoint, row.model_mapped, start, row.ts]
        earlier += [
            e
            for e in self._query(start, row.ts, where, args)
            if e.order < row.order and e.key not in in_chunk
        ]
        if earlier:
            return max(earlier, key=lambda e: e.order).dialog_id
        return window_dialog_id(row.api_key_hash, row.endpoint, row.model_mapped, row.ts)

    def write(self, path: Path, changed: list[_Entry]) -> None:
        if not changed:
            return
        with self.store.connected(path) as db:
            with db.atomic("IMMEDIATE"):
                db.connection().executemany(
                    "UPDATE requests SET dialog_id = ?, dialog_parent_id = ? WHERE request_id = ? AND server_id = ?",
                    [(r.dialog_id, r.parent, r.request_id, r.server_id) for r in changed],
                )
            limit_wal(db, self.store.settings)
        self.updated += len(changed)


def _run(
    store: Store,
    since: date | None,
    to: date | None,
    window: str | None,
    only_pending: bool,
    unreadable: Unreadable | None,
) -> dict[str, int]:
    assigner = _Assigner(store, parse_window(window or store.settings.dialog_window), unreadable)
    per_file: dict[str, int] = {}
    pending = " AND dialog_id IS NULL" if only_pending else ""
    for part in store.existing(since, to):
        with skipping(unreadable):
            per_file[str(part.path)] = _run_partition(store, assigner, part.path, pending)
    return per_file


def _run_partition(store: Store, assigner: _Assigner, path: Path, pending: str) -> int:
    """Group the rows of one partition; returns how many changed."""
    before = assigner.updated
    after = -1
    while True:
        # Chunks end on a whole second (the ts index orders seconds; Python orders within).
        with store.connected(path) as db:
            rows = [
                _Entry(*r)
                for r in db.execute_sql(
                    f"SELECT {_COLUMNS} FROM requests WHERE ts > ?{pending} ORDER BY ts LIMIT ?",
                    (after, CHUNK),
                )
            ]
            if not rows:
                break
            after = rows[-1].ts
            rows = [r for r in rows if r.ts < after]
            rows += [
                _Entry(*r)
                for r in db.execute_sql(
                    f"SELECT {_COLUMNS} FROM requests WHERE ts = ?{pending}", (after,)
                )
            ]
        rows.sort(key=lambda r: r.order)
        assigner.write(path, assigner.chunk(path, rows))
    return assigner.updated - before


def assign(
    store: Store,
    since: date | None = None,
    to: date | None = None,
    window: str | None = None,
    *,
    unreadable: Unreadable | None = None,
) -> dict[str, int]:
    """Recompute dialogs of every row in range; returns rows updated per partition file. With
    `unreadable`, a partition that cannot be read or changed is noted there and left out; rows
    that already have a dialog and whose lookback reaches it keep that dialog (their parent may
    be in it). Without, the error is raised."""
    return _run(store, since, to, window, only_pending=False, unreadable=unreadable)


def assign_pending(
    store: Store, since: date | None = None, window: str | None = None, *, unreadable: Unreadable | None = None
) -> dict[str, int]:
    """Give a dialog to rows that have none yet (new rows), from `since` on; when a row grouped
    earlier continues one of them, group again from that new row's day (see late_parent_ts)."""
    late = _Assigner(store, DEFAULT_WINDOW_S, unreadable).late_parent_ts(since)
    done = _run(store, since, None, window, only_pending=True, unreadable=unreadable)
    if late is not None:
        for path, updated in _run(store, day_of(late), None, window, only_pending=False, unreadable=unreadable).items():
            done[path] = done.get(path, 0) + updated
    return done


def clear(
    store: Store, since: date | None = None, to: date | None = None, *, unreadable: Unreadable | None = None
) -> dict[str, int]:
    """Remove dialog ids in range: path -> rows cleared. `unreadable` as for assign()."""
    out = {}
    for part in store.existing(since, to):
        with skipping(unreadable), store.connected(part.path) as db:
            with db.atomic("IMMEDIATE"):
                cursor = db.execute_sql(
                    "UPDATE requests SET dialog_id = NULL, dialog_parent_id = NULL WHERE dialog_id IS NOT NULL"
                )
            out[str(part.path)] = cursor.rowcount
    return out
