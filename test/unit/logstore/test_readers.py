import io
import json

from aiproxy.logstore.readers import read_jsonl, read_seed_log
from aiproxy.testing.logrecords import seed_block


def test_jsonl_leaves_an_unterminated_last_line_for_the_next_run():
    data = b'{"a": 1}\n{"b": 2}\n{"c": '
    items = list(read_jsonl(io.BytesIO(data), 0, 0))
    assert [i.record for i in items] == [{"a": 1}, {"b": 2}]
    assert items[-1].end == data.index(b'{"c"') and items[-1].lines == 2


def test_jsonl_reports_a_corrupt_line_and_keeps_going():
    data = b'{"a": 1}\nnot json {\n{"b": 2}\n'
    items = list(read_jsonl(io.BytesIO(data), 0, 0))
    assert [i.line for i in items] == [1, 2, 3]
    assert items[1].error and items[1].record is None
    assert items[2].record == {"b": 2}


def test_jsonl_resumes_at_an_offset_with_absolute_line_numbers():
    data = b'{"a": 1}\n{"b": 2}\n'
    items = list(read_jsonl(io.BytesIO(data), 9, 1))
    assert [(i.line, i.record) for i in items] == [(2, {"b": 2})]


def test_seed_blocks_with_braces_and_quotes_inside_strings_decode():
    tricky = {"endpoint": "/v1/chat/completions", "request": {"messages": [{"content": 'function f() { return "}"; }'}]}}
    data = (seed_block(tricky) + seed_block({"endpoint": "x", "n": 2})).encode()
    items = list(read_seed_log(io.BytesIO(data), 0, 0))
    assert [i.record for i in items] == [tricky, {"endpoint": "x", "n": 2}]
    assert items[0].line == 1 and items[1].line == len(json.dumps(tricky, indent=2).splitlines()) + 1
    assert items[-1].end == len(data)


def test_seed_block_still_being_written_is_left_alone():
    full = seed_block({"endpoint": "x", "n": 1})
    data = (full + seed_block({"endpoint": "y"})[:-8]).encode()
    items = list(read_seed_log(io.BytesIO(data), 0, 0))
    assert [i.record for i in items] == [{"endpoint": "x", "n": 1}]
    assert items[-1].end == len(full.encode())


def test_seed_corrupt_block_is_reported_and_the_next_one_is_read():
    data = ("2025-09-10 12:00:00 - INFO - {\n  \"a\": [1, \n" + seed_block({"ok": True})).encode()
    items = list(read_seed_log(io.BytesIO(data), 0, 0))
    assert items[0].error and items[0].line == 1
    assert items[1].record == {"ok": True} and items[1].line == 3


def test_seed_plain_text_lines_are_skipped_not_reported():
    data = ("2025-09-10 12:00:00 - INFO - HTTP Request: POST x\nTraceback line\n" + seed_block({"k": 1})).encode()
    items = list(read_seed_log(io.BytesIO(data), 0, 0))
    assert [i.error for i in items] == [None, None, None]
    assert items[-1].record == {"k": 1}


def test_jsonl_idle_fragment_is_reported_without_counting_its_line():
    data = b'{"a": 1}\n{"c": '
    items = list(read_jsonl(io.BytesIO(data), 0, 0, idle_size=len(data)))
    assert [(i.line, i.lines, i.end) for i in items] == [(1, 1, 9), (2, 1, len(data))]
    assert items[1].record is None and items[1].error.startswith("unterminated last line")
    # A restarted gateway ends the fragment with "\n" before its next record: that "\n" is line 2.
    later = data + b'\n{"d": 4}\n'
    resumed = list(read_jsonl(io.BytesIO(later), items[1].end, items[1].lines))
    assert [(i.line, i.record) for i in resumed] == [(2, None), (3, {"d": 4})]
    assert resumed[0].error is None


def test_jsonl_idle_record_cut_just_before_its_newline_is_read_whole():
    data = b'{"a": 1}\n{"b": 2}'
    items = list(read_jsonl(io.BytesIO(data), 0, 0, idle_size=len(data)))
    assert [i.record for i in items] == [{"a": 1}, {"b": 2}] and items[1].error is None


def test_jsonl_tail_that_grew_since_the_file_was_idle_is_still_waited_for():
    data = b'{"a": 1}\n{"c": '
    items = list(read_jsonl(io.BytesIO(data + b'"more'), 0, 0, idle_size=len(data)))
    assert [i.record for i in items] == [{"a": 1}]


def test_seed_idle_block_cut_short_is_reported_and_one_missing_its_newline_decodes():
    full = seed_block({"endpoint": "x", "n": 1})
    cut = (full + seed_block({"endpoint": "y"})[:-8]).encode()
    items = list(read_seed_log(io.BytesIO(cut), 0, 0, idle_size=len(cut)))
    assert items[0].record == {"endpoint": "x", "n": 1}
    assert items[1].error and items[1].end == len(cut)
    whole = (full + seed_block({"endpoint": "y"}).rstrip("\n")).encode()
    items = list(read_seed_log(io.BytesIO(whole), 0, 0, idle_size=len(whole)))
    assert [i.record for i in items] == [{"endpoint": "x", "n": 1}, {"endpoint": "y"}]
    assert items[-1].end == len(whole)
