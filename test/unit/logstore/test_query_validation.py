import pytest

from aiproxy.errors import InvalidRequest
from aiproxy.logstore.errors import InvalidQuery
from aiproxy.logstore.fts_query import QueryShapeError, ScoredPart, scored_parts, to_fts5
from aiproxy.logstore.search import MAX_RESCALED_PARTS, RESCALE_TOLERANCE, rescale, validate_query

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


@pytest.mark.parametrize(
    ("query", "parts"),
    [
        ("a", [ScoredPart("a", ("a",))]),
        ("a b*", [ScoredPart("a", ("a",)), ScoredPart("b*", ("b*",))]),
        ("a NOT b c", [ScoredPart("a", ("a",))]),  # nothing on the right of NOT is in a result
        # An OR operand that is not a single phrase is a guard: its phrases count only where it matches.
        ("a OR b c", [ScoredPart("a", ("a",)), ScoredPart("b", ("b",), ("(b AND c)",)),
                      ScoredPart("c", ("c",), ("(b AND c)",))]),
        ("x OR (y NOT z)", [ScoredPart("x", ("x",)), ScoredPart("y", ("y",), ("(y NOT z)",))]),
        ("{role content}:(a OR content:b) AND ^c", [ScoredPart("{content role} : a", ("{content role} : a",)),
                                                    ScoredPart("{content} : b", ("{content} : b",)),
                                                    ScoredPart("^c", ("^c",))]),
        ("-{role content endpoint model_original}: a", [ScoredPart("{model_mapped request_id} : a",
                                                                   ("{model_mapped request_id} : a",))]),
        ('Role:"a b" + c', [ScoredPart('{role} : "a b" + c', ('{role} : "a b" + c',))]),
        ("NEAR(a \"b c\"*, 3)", [ScoredPart('NEAR(a "b c"*, 3)', ("a", '"b c"*'))]),  # a NEAR group stays whole
    ],
)
def test_a_query_is_taken_apart_into_the_phrases_that_score_it(query, parts):
    assert scored_parts(query) == parts
    for part in parts:
        for derived in (part.query, *part.phrases, *part.guards):
            validate_query(derived)


@pytest.mark.parametrize("query", ["role:(content:a)", "a (b)", '"open', "(" * 250 + "a" + ")" * 250])
def test_what_the_parser_does_not_take_apart_is_reported(query):
    with pytest.raises(QueryShapeError):
        scored_parts(query)


def test_parts_whose_idf_moves_like_the_folded_ones_are_scaled_with_it():
    """A part gets its own scan (a join over all its matches) only when its factor differs from
    the folded part's by more than RESCALE_TOLERANCE; on ordinary days every factor is near 1."""
    parts = [ScoredPart("alpha", ("alpha",), ()), ScoredPart("beta", ("beta",), ())]
    # one partition of 1,000 fragments among 30,000: alpha in 100 (3,000 overall), beta in 10 (300)
    even = rescale(parts, 1000, {"alpha": 100, "beta": 10}, 30_000, {"alpha": 3000, "beta": 300})
    assert even.terms == () and abs(even.base - 1) < RESCALE_TOLERANCE
    # the incident day: alpha in 900 of its 1,000 fragments (FTS5's floor IDF there)
    skewed = rescale(parts, 1000, {"alpha": 900, "beta": 10}, 30_000, {"alpha": 3800, "beta": 300})
    assert [term[0] for term in skewed.terms] == ["beta"] and skewed.base > 1000


def test_at_most_max_rescaled_parts_are_read_alone_those_whose_idf_moved_most():
    """Each part read alone is a join: SQLite joins 64 tables at most."""
    parts = [ScoredPart(f"w{i}", (f"w{i}",), ()) for i in range(100)]
    local = {f"w{i}": 1 + i for i in range(100)}  # w99 (most matches) is folded; w0 moved most
    scale = rescale(parts, 1000, local, 30_000, dict.fromkeys(local, 50))
    assert [term[0] for term in scale.terms] == [f"w{i}" for i in range(MAX_RESCALED_PARTS)]


@pytest.mark.parametrize("query", ["-" * 3000, "x " + "-" * 1000 + "y", "role:" * 3000 + "x", "-role:" * 3000 + "x"])
def test_long_runs_of_minus_signs_or_column_filters_are_invalid_queries_not_a_recursion_error(query):
    """Each leading `-` and each `col:` of a token was one recursive call: a thousand of them were a
    RecursionError (a traceback from `logdb search`, INTERNAL over gRPC) instead of a 400."""
    with pytest.raises(InvalidQuery):
        validate_query(to_fts5(query))


def test_minus_signs_and_column_filters_of_one_token_keep_their_meaning():
    assert to_fts5("--x") == "NOT NOT x"
    assert to_fts5("--role:user") == "NOT -role:user"
    assert to_fts5("role:-content:a.b") == 'role:-content:"a.b"'


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("paris, france", "paris france"),  # was `fts5: syntax error near ","`: an invalid query
        ("connection reset, retrying", "connection reset retrying"),
        ("(alpha, two)", "(alpha two)"),
        ("NEAR(a b, 3), c", "NEAR(a b, 3) c"),  # NEAR's own comma stays
        ("NEAR (a b, 3)", "NEAR (a b, 3)"),
        ('"a, b", c', '"a, b" c'),
    ],
)
def test_a_comma_outside_near_separates_words(given, expected):
    assert " ".join(to_fts5(given).split()) == expected
    validate_query(to_fts5(given))
