"""Dialog threading on real partitions: model switches, pauses, midnight, parallel conversations."""

import sqlite3
from datetime import UTC, datetime, timedelta

from aiproxy.logstore import dialogs
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.queries import dialog_turn_keys, get_turn
from aiproxy.testing.logrecords import chat_record, conversation, make_store, write_jsonl

T0 = datetime(2025, 9, 10, 23, 40, tzinfo=UTC)


def get_dialog(store, dialog_id: str) -> list[dict]:
    """Every turn of a dialog in order, read the way GetDialog pages them."""
    return [get_turn(store, path, key) for key, path in dialog_turn_keys(store, dialog_id, None, 10_000)]


def _dialogs(store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in store.existing():
        with sqlite3.connect(part.path) as conn:
            for rid, did in conn.execute("SELECT request_id, dialog_id FROM requests ORDER BY ts, ts_iso, request_id"):
                out.setdefault(did, []).append(rid)
    return out


def _snapshot(store):
    rows = []
    for part in store.existing():
        with sqlite3.connect(part.path) as conn:
            rows += conn.execute("SELECT request_id, dialog_id, dialog_parent_id FROM requests ORDER BY request_id").fetchall()
    return sorted(rows)


def _ingest(tmp_path, records, **settings):
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db", **settings)
    ingest(store, tmp_path / "logs")
    return store


def _ids(records):
    return [r["request_id"] for r in records]


def test_a_conversation_stays_one_dialog_across_midnight_pauses_and_model_switches(tmp_path):
    turns = [("plan a trip", "where to?"), ("Lisbon", "nice"), ("budget?", "cheap"), ("hotels", "three options")]
    records = conversation(turns, start=T0, gap_s=900)
    records[2]["model_mapped"] = records[2]["response"]["model"] = "anthropic/claude"  # switch model mid-way
    late = datetime.fromisoformat(records[3]["ts"].replace("Z", "+00:00")) + timedelta(days=3)
    records[3]["ts"] = late.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # and come back days later
    store = _ingest(tmp_path, records)
    assert len(store.existing()) == 3
    groups = _dialogs(store)
    assert list(groups.values()) == [_ids(records)]
    turns_back = get_dialog(store, next(iter(groups)))
    assert [t["request_id"] for t in turns_back] == _ids(records)
    assert turns_back[1]["dialog_parent_id"] == records[0]["request_id"]


def test_parallel_conversations_with_the_same_key_never_merge(tmp_path):
    a = conversation([("cats?", "meow"), ("more cats", "purr"), ("even more", "hiss")], start=T0, gap_s=60)
    b = conversation([("dogs?", "woof"), ("more dogs", "bark"), ("even more", "growl")], start=T0 + timedelta(seconds=30), gap_s=60)
    store = _ingest(tmp_path, sorted(a + b, key=lambda r: r["ts"]))
    assert sorted(_dialogs(store).values()) == sorted([_ids(a), _ids(b)])


def test_identical_parallel_conversations_stay_apart(tmp_path):
    """Same key, same questions, same answers (a deterministic model): still two dialogs."""
    a = conversation([("hi", "hello"), ("again", "hello again")], start=T0, gap_s=60)
    b = conversation([("hi", "hello"), ("again", "hello again")], start=T0 + timedelta(seconds=10), gap_s=60)
    store = _ingest(tmp_path, sorted(a + b, key=lambda r: r["ts"]))
    groups = sorted(_dialogs(store).values(), key=len)
    assert [len(g) for g in groups] == [2, 2]


def test_different_keys_never_share_a_dialog(tmp_path):
    a = conversation([("hi", "hello"), ("again", "hello again")], start=T0, gap_s=60, key="alice")
    b = conversation([("hi", "hello"), ("again", "hello again")], start=T0, gap_s=60, key="bob")
    store = _ingest(tmp_path, a + b)
    assert sorted(_dialogs(store).values()) == sorted([_ids(a), _ids(b)])


def test_trimmed_history_still_threads_on_the_last_exchange(tmp_path):
    records = conversation([("one", "1"), ("two", "2"), ("three", "3")], start=T0, gap_s=60)
    messages = records[2]["request"]["messages"]
    records[2]["request"]["messages"] = messages[2:]  # the client dropped the oldest exchange
    store = _ingest(tmp_path, records)
    assert list(_dialogs(store).values()) == [_ids(records)]


def test_window_rule_groups_requests_without_chat_messages(tmp_path):
    records = []
    for i, minutes in enumerate([0, 10, 25, 80]):
        record = chat_record([], f"a{i}", ts=T0 + timedelta(minutes=minutes))
        record["request"] = {"model": "gpt-4o", "prompt": f"completion {i}"}
        records.append(record)
    store = _ingest(tmp_path, records)
    assert sorted(_dialogs(store).values(), key=len) == [_ids(records[3:]), _ids(records[:3])]
    dialogs.assign(store, window="1h")
    assert list(_dialogs(store).values()) == [_ids(records)]


def test_a_window_too_long_to_compute_with_is_the_longest_one(tmp_path):
    records = []
    for i in range(2):
        record = chat_record([], f"a{i}", ts=T0 + timedelta(days=i))
        record["request"] = {"model": "gpt-4o", "prompt": f"completion {i}"}
        records.append(record)
    store = _ingest(tmp_path, records, grouping_enabled=False)
    assert sum(dialogs.assign(store, window="99999999999999999999h").values()) == 2  # was an OverflowError
    assert list(_dialogs(store).values()) == [_ids(records)]


def test_ids_are_deterministic_and_rerunning_changes_nothing(tmp_path):
    a = conversation([("x", "1"), ("y", "2"), ("z", "3")], start=T0, gap_s=600)
    b = conversation([("p", "1"), ("q", "2")], start=T0, gap_s=700)
    store = _ingest(tmp_path, a + b)
    before = _snapshot(store)
    assert sum(dialogs.assign(store).values()) == 0
    assert sum(dialogs.clear(store).values()) == 5
    assert sum(dialogs.assign(store).values()) == 5
    assert _snapshot(store) == before
    other = _ingest(tmp_path / "again", a + b)  # a fresh store computes the same ids
    assert _snapshot(other) == before


def test_grouping_off_leaves_dialogs_empty_until_assign(tmp_path):
    records = conversation([("x", "1"), ("y", "2")], start=T0, gap_s=60)
    store = _ingest(tmp_path, records, grouping_enabled=False)
    assert list(_dialogs(store)) == [None]
    dialogs.assign(store)
    assert list(_dialogs(store).values()) == [_ids(records)]


def test_turns_within_one_second_thread_in_microsecond_order(tmp_path):
    records = conversation([("a", "1"), ("b", "2"), ("c", "3")], start=T0, gap_s=0.001)
    for record, rid in zip(records, ["req-z", "req-m", "req-a"], strict=True):  # ids sort against time
        record["request_id"] = rid
    store = _ingest(tmp_path, records)
    assert list(_dialogs(store).values()) == [["req-z", "req-m", "req-a"]]
    from aiproxy.logstore.queries import list_dialogs

    assert list_dialogs(store)[0][0].first_request_id == "req-z"  # (ts, ts_iso, request_id), not the lowest id


def test_dialog_listing_pages_newest_first_with_complete_counts(tmp_path):
    from aiproxy.logstore.queries import list_dialogs

    long_one = conversation([(f"day {d}", f"ok {d}") for d in range(5)], start=T0, gap_s=86400, key="k-long")
    daily = []
    for d in range(5):
        for n in range(2):
            start = T0 + timedelta(days=d, minutes=n - 60)  # before that day's long turn
            daily += conversation([(f"short {d}-{n}", "fine")], start=start, key=f"k-{d}-{n}")
    store = _ingest(tmp_path, long_one + daily)
    page, cursor = list_dialogs(store, limit=2)
    assert page[0].requests == 5 and page[0].first_request_id == long_one[0]["request_id"]  # completed from older files
    assert page[0].last_ts >= page[1].last_ts
    seen = [d.dialog_id for d in page]
    while cursor:
        more, cursor = list_dialogs(store, limit=2, cursor=cursor)
        seen += [d.dialog_id for d in more]
    assert len(seen) == len(set(seen)) == 11
    counts = {d.dialog_id: d.requests for d in list_dialogs(store, limit=50)[0]}
    assert sorted(counts.values()) == [1] * 10 + [5]


GREETING = [{"role": "system", "content": "Support bot"}, {"role": "assistant", "content": "Hi! How can I help?"}]


def _opened_with(records, opening):
    """The conversation as a chat UI sends it: every request starts with `opening`."""
    for record in records:
        record["request"]["messages"] = [*opening, *record["request"]["messages"]]
    return records


def test_conversations_that_open_with_an_assistant_greeting_are_dialogs_of_their_own(tmp_path):
    """Chat UIs inject a greeting before the first question: the first request already holds an
    assistant message, but no exchange, so it starts a dialog (the window rule merged them)."""
    a = _opened_with(conversation([("my invoice 4411", "looking"), ("any news?", "paid")], start=T0, gap_s=120), GREETING)
    b = _opened_with(conversation([("a pasta recipe", "carbonara"), ("vegetarian?", "pesto")],
                                  start=T0 + timedelta(seconds=30), gap_s=120), GREETING)
    c = _opened_with(conversation([("hello", "hi")], start=T0 + timedelta(seconds=60)), GREETING[1:])  # no system
    store = _ingest(tmp_path, sorted(a + b + c, key=lambda r: r["ts"]))
    assert sorted(_dialogs(store).values()) == sorted([_ids(a), _ids(b), _ids(c)])
    parents = {rid: parent for rid, _, parent in _snapshot(store)}
    assert parents[a[1]["request_id"]] == a[0]["request_id"] and parents[a[0]["request_id"]] is None
    assert sum(dialogs.assign(store).values()) == 0  # and a re-run agrees


def test_a_greeting_the_model_wrote_still_threads_on_the_request_that_asked_for_it(tmp_path):
    opener = chat_record([GREETING[0]], GREETING[1]["content"], ts=T0)  # the UI asked the model for a greeting
    turn = chat_record([*GREETING, {"role": "user", "content": "hello"}], "hi", ts=T0 + timedelta(seconds=5))
    store = _ingest(tmp_path, [opener, turn])
    assert list(_dialogs(store).values()) == [_ids([opener, turn])]


def test_a_continuation_whose_parent_was_never_logged_still_joins_by_the_window_rule(tmp_path):
    first = conversation([("start", "ok")], start=T0)
    history = [{"role": "user", "content": "unlogged"}, {"role": "assistant", "content": "lost answer"}]
    orphan = chat_record([*history, {"role": "user", "content": "go on"}], "sure", ts=T0 + timedelta(minutes=5))
    late = chat_record([*history, {"role": "user", "content": "later"}], "hm", ts=T0 + timedelta(hours=2))
    store = _ingest(tmp_path, [*first, orphan, late])
    assert sorted(_dialogs(store).values()) == sorted([_ids([*first, orphan]), _ids([late])])


def test_a_prefilled_turn_threads_by_content_and_so_does_the_turn_after_it(tmp_path):
    """A client that prefills the answer sends an assistant message last, for the model to continue.
    Was: that message was taken for the history's last assistant turn, so the request matched no
    earlier one and fell back to the window rule (here: two hours later, another dialog); a first
    question with a prefill was not a first turn either."""
    first = chat_record([{"role": "user", "content": "name a colour"}], "blue", ts=T0)
    history = [{"role": "user", "content": "name a colour"}, {"role": "assistant", "content": "blue"},
               {"role": "user", "content": "as JSON"}]
    prefilled = chat_record([*history, {"role": "assistant", "content": '{"colour":'}], ' "blue"}',
                            ts=T0 + timedelta(hours=2))
    after = chat_record([*history, {"role": "assistant", "content": '{"colour": "blue"}'},
                         {"role": "user", "content": "thanks"}], "welcome", ts=T0 + timedelta(hours=4))
    opener = chat_record([{"role": "user", "content": "a haiku"}, {"role": "assistant", "content": "Autumn"}],
                         " moon", ts=T0 + timedelta(hours=2, minutes=1))  # a first question, prefilled
    store = _ingest(tmp_path, [first, prefilled, opener, after])
    assert sorted(_dialogs(store).values()) == sorted([_ids([first, prefilled, after]), _ids([opener])])
    parents = {rid: parent for rid, _, parent in _snapshot(store)}
    assert parents[prefilled["request_id"]] == first["request_id"]
    assert parents[after["request_id"]] == prefilled["request_id"]


def test_a_filtered_listing_describes_each_dialog_whole(tmp_path):
    """since/to and model choose the dialogs; counts, first and last turn, models are the whole
    dialog's, as GetDialog shows it (they counted only the rows inside the filter)."""
    from aiproxy.logstore.queries import list_dialogs
    from aiproxy.logstore.search import SearchFilters

    long_one = conversation([(f"day {d}", f"ok {d}") for d in range(4)], start=T0, gap_s=86400, key="k-long")
    long_one[3]["model_mapped"] = "anthropic/claude"
    others = [conversation([(f"other {d}", "fine")], start=T0 + timedelta(days=d, minutes=5), key=f"k-{d}") for d in range(4)]
    store = _ingest(tmp_path, long_one + [r for o in others for r in o])
    day2 = (T0 + timedelta(days=2)).date()
    for filters in (SearchFilters(since=day2, to=day2), SearchFilters(model="anthropic/claude"),
                    SearchFilters(since=day2, to=day2, api_key_hash="kh-k-long")):
        page, _ = list_dialogs(store, filters, limit=50)
        whole = next(d for d in page if d.first_request_id == long_one[0]["request_id"])
        assert whole.requests == len(get_dialog(store, whole.dialog_id)) == 4, filters
        assert whole.last_ts == int(datetime.fromisoformat(long_one[3]["ts"]).timestamp())
        assert whole.models == ["anthropic/claude", "openai/gpt-4o"]
    page, cursor = list_dialogs(store, SearchFilters(since=day2, to=day2), limit=1)  # ordered by activity in range
    assert page[0].dialog_id == _dialog_of(store, others[2][0]) and page[0].requests == 1
    more, cursor = list_dialogs(store, SearchFilters(since=day2, to=day2), limit=1, cursor=cursor)
    assert more[0].requests == 4 and cursor
    assert list_dialogs(store, SearchFilters(since=day2, to=day2), limit=1, cursor=cursor) == ([], "")


def _dialog_of(store, record):
    return next(did for did, rids in _dialogs(store).items() if record["request_id"] in rids)


def test_assignment_reads_a_partition_in_bounded_chunks_and_threads_across_them(tmp_path, monkeypatch):
    """Seed §11 Performance: dialog assignment loaded the whole partition into memory. Rows are
    read a chunk at a time (whole seconds), and conversations split by chunk boundaries thread as
    they would in one chunk."""
    talks = [conversation([(f"{topic} {i}", f"re {topic} {i}") for i in range(5)], start=T0 + timedelta(seconds=10 * n),
                          gap_s=60) for n, topic in enumerate(("cats", "dogs", "owls"))]
    store = _ingest(tmp_path, sorted(sum(talks, []), key=lambda r: r["ts"]), grouping_enabled=False)
    sizes = []
    real_chunk = dialogs._Assigner.chunk
    monkeypatch.setattr(dialogs._Assigner, "chunk", lambda self, path, rows: sizes.append(len(rows)) or real_chunk(self, path, rows))
    monkeypatch.setattr(dialogs, "CHUNK", 4)
    dialogs.assign(store)
    assert sum(sizes) == 15 and max(sizes) <= 4 and len(sizes) >= 4
    assert sorted(_dialogs(store).values()) == sorted(_ids(t) for t in talks)


def test_a_parent_ingested_after_its_continuation_joins_them_into_one_dialog(tmp_path):
    """Two gateway workers write two files, and a round may read the second before the first one's
    record of the turn before: the earlier turn then arrives in a later ingest."""
    records = conversation([("one", "1"), ("two", "2"), ("three", "3")], start=T0, gap_s=60)
    store = make_store(tmp_path / "db")
    write_jsonl(tmp_path / "b" / "requests-20250910-2.jsonl", records[1:])
    ingest(store, tmp_path / "b")
    write_jsonl(tmp_path / "a" / "requests-20250910-1.jsonl", records[:1])
    ingest(store, tmp_path / "a")
    assert list(_dialogs(store).values()) == [_ids(records)]
    assert sum(dialogs.assign(store).values()) == 0  # what a full regrouping decides, too


def test_dialogs_active_within_one_second_list_latest_first_and_page_without_gaps(tmp_path):
    """Request listings order one second's requests by their µs timestamp; dialog listings too."""
    from aiproxy.logstore.queries import list_dialogs

    records = []
    for n in range(6):  # conversation n's only turn comes n ms into the second; ids sort against it
        records += conversation([(f"topic {n}", "ok")], start=T0 + timedelta(milliseconds=n), key=f"k{n}")
    store = _ingest(tmp_path, records)
    newest_first = [r["request_id"] for r in reversed(records)]
    assert [d.first_request_id for d in list_dialogs(store, limit=10)[0]] == newest_first
    seen, cursor = [], ""
    while True:
        page, cursor = list_dialogs(store, limit=4, cursor=cursor)
        seen += [d.first_request_id for d in page]
        if not cursor:
            break
    assert seen == newest_first


def _tool_conversation(city: str, start: datetime, key: str = "key-a") -> list[dict]:
    """An agent's tool loop as LangChain sends it: the call's arguments come back re-serialised
    (`json.dumps` of the parsed dict: spaces, non-ASCII escaped), not as the model wrote them."""
    import json

    asked = {"role": "user", "content": f"weather in {city}?"}
    first = chat_record([asked], "", ts=start, key=key)
    call = {"id": f"call_{city}", "type": "function", "function": {"name": "weather", "arguments": f'{{"city":"{city}"}}'}}
    first["response"]["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
    sent_back = {**call, "function": {"name": "weather", "arguments": json.dumps({"city": city})}}
    history = [asked, {"role": "assistant", "content": None, "tool_calls": [sent_back]},
               {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    second = chat_record(history, f"sunny in {city}", ts=start + timedelta(seconds=2), key=key)
    third = chat_record([*history, {"role": "assistant", "content": f"sunny in {city}"},
                         {"role": "user", "content": "thanks"}], "bye", ts=start + timedelta(seconds=4), key=key)
    return [first, second, third]


def test_tool_call_turns_thread_when_the_client_reserialises_the_arguments(tmp_path):
    paris = _tool_conversation("Paris", T0)
    zurich = _tool_conversation("Zürich", T0 + timedelta(seconds=1))  # interleaved, same key and model
    store = _ingest(tmp_path, sorted(paris + zurich, key=lambda r: r["ts"]))
    assert sorted(_dialogs(store).values()) == sorted([_ids(paris), _ids(zurich)])
    parents = {rid: parent for rid, _, parent in _snapshot(store)}
    assert parents[paris[1]["request_id"]] == paris[0]["request_id"]
