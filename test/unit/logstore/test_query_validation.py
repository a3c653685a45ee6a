import pytest

from aiproxy.errors import InvalidRequest
from aiproxy.logstore.errors import InvalidQuery
from aiproxy.logstore.fts_query import to_fts5
from aiproxy.logstore.search import validate_query

VALID = ["hello", "machine learning OR AI", "NEAR(error timeout, 5)", '"exact phrase"',
         "time*", "content:paris", "role:user AND content:paris", "a NOT b", "{role content}: x", "^start"]
HOSTILE = ["a AND", '"unterminated', "foo:bar", "(", "*", "AND", '"', "'; DROP TABLE requests; --", "NEAR(", ")",
           "a OR OR b", "\x00", "content:", "-", "+", "a:b:c", "[x]", "NEAR/abc"]


@pytest.mark.parametrize("query", VALID)
def test_fts5_syntax_is_accepted(query):
    validate_query(query)


@pytest.mark.parametrize("query", HOSTILE)
def test_invalid_queries_raise_a_client_error_not_an_sql_error(query):
    with pytest.raises(InvalidQuery) as info:
        validate_query(query)
    assert isinstance(info.value, InvalidRequest) and info.value.http_status == 400
    assert info.value.grpc_code.name == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("error NEAR/5 timeout", "NEAR(error timeout, 5)"),
        ("error NEAR timeout", "NEAR(error timeout)"),
        ('"time out" NEAR/2 retry', 'NEAR("time out" retry, 2)'),
        ('"a NEAR/3 b"', '"a NEAR/3 b"'),
        ("NEAR(a b, 3)", "NEAR(a b, 3)"),
        ("x AND y", "x AND y"),
    ],
)
def test_fts4_near_form_is_rewritten_for_fts5(given, expected):
    assert to_fts5(given) == expected
    validate_query(to_fts5(given))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("alpha -banana", "alpha NOT banana"),
        ('France -"capital of"', 'France NOT "capital of"'),  # was `France "-""capital of"`: required it
        ("France -(Germany OR Japan)", "France NOT (Germany OR Japan)"),  # was a syntax error (400)
        ('a -"b c"* d', 'a NOT "b c"* d'),
        ("a -(b -c)", "a NOT (b NOT c)"),
        ("gpt-4 -x", '"gpt-4" NOT x'),  # a `-` inside a word stays part of it
        ("a - b", 'a "-" b'),  # a lone `-` is text, as before
        ("x -content:paris", "x -content:paris"),  # FTS5's column exclusion
    ],
)
def test_a_leading_minus_excludes_a_word_a_phrase_or_a_group(given, expected):
    assert to_fts5(given) == expected
    validate_query(expected)
