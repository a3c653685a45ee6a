import sqlite3

from aiproxy.logstore.sqltools import IN_CHUNK, chunked, in_list


def test_in_lists_are_padded_to_the_next_power_of_two_only():
    assert in_list(["a"]) == ("(?)", ["a"])
    marks, args = in_list(["a", "b", "c"])
    assert marks == "(?, ?, ?, ?)" and args == ["a", "b", "c", None]
    assert len(in_list(list(range(IN_CHUNK)))[1]) == IN_CHUNK


def test_chunks_cover_every_value_and_nulls_match_nothing():
    values = list(range(1, 1201))
    assert [len(c) for c in chunked(values)] == [IN_CHUNK, IN_CHUNK, 1200 - 2 * IN_CHUNK]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (v INTEGER)")
    db.executemany("INSERT INTO t VALUES (?)", [(v,) for v in range(0, 2000, 7)] + [(None,)])
    found = []
    for chunk in chunked(values):
        marks, args = in_list(chunk)
        found += [v for (v,) in db.execute(f"SELECT v FROM t WHERE v IN {marks}", args)]
    assert sorted(found) == [v for v in range(7, 1201, 7)]
