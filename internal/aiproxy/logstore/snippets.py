"""A search result's snippet: a window of its fragment's words with the matches marked, at a cost that
grows with the fragment's length, not with the square of its matches.

FTS5's snippet() scores a window at every match of the fragment by reading every match (fts5_aux.c), so
it costs the square of their number: a query word repeated 10,000 times in one fragment (a client's
prompt) took 0.5 s, 20,000 Chinese characters (a word each) 2 s, `x OR x OR x OR x` over 4,000 `x`
1.4 s and a 400-word OR query hours, in one C call that no stop interrupts. So snippet() writes only the
snippets of fragments that cannot hold more than MAX_SNIPPET_MATCHES matches: a text too short for more
(each of the query's phrases is a word at least), or one whose highlight() marks too few words. Other
snippets are built here from the highlighted text by snippet()'s rules: the window at a match, or at
the sentence start before it, that holds the most distinct phrases, then the most matches (the first of
equals), centred on its matches; the same marks and ellipses. A marked run of words stands for a match,
its words (folded) for its phrase, and words are cut as unicode61 cuts them. highlight() reads the
matches once, as bm25 did for the ranking (SQLite 3.40's copies its output at each mark: 0.07 s for a
fragment of 20,000 Chinese characters, the longest one).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right

from aiproxy.logstore.database import FTS_TABLE
from aiproxy.logstore.models import FTS_COLUMNS

OPEN, CLOSE, ELLIPSIS = "[", "]", "…"
# Matches (a bound) up to which FTS5's snippet() writes the snippet: there it costs at most about what
# building it here costs (measured on fragments of one match every 10 words: 512 matches 1.3 ms against
# 1.8 ms, 1,024 matches 5.2 ms against 3.7 ms).
MAX_SNIPPET_MATCHES = 512

_CONTENT = FTS_COLUMNS.index("content")
# A unicode61 token (its defaults: letters, digits and private-use characters; a combining diacritic
# continues a token but starts none), as far as Python's Unicode tables agree with SQLite's.
_TOKEN_CHAR = r"[^\W_]|[\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd]"
_TOKEN = re.compile(f"(?:{_TOKEN_CHAR})(?:{_TOKEN_CHAR}|[\u0300-\u036f])*")
# Where FTS5's snippet() sees a sentence start: a token after whitespace after a '.' or ':'.
_SENTENCE_START = re.compile(f"[.:][ \t\n\r]+(?={_TOKEN_CHAR})")
_MARKS = ("\ue000", "\ue001")  # any two characters the fragment does not hold
_HIGHLIGHT = f"highlight({FTS_TABLE}, {_CONTENT}, ?, ?)"
_MATCHING = f"FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? AND"
# FTS5's snippet() of a text too short to hold more matches than MAX_SNIPPET_MATCHES, else the text and
# its highlight().
_SNIPPET_OR_HIGHLIGHT = (
    f"SELECT rowid, length(content) <= ?, CASE WHEN length(content) <= ?"
    f" THEN snippet({FTS_TABLE}, {_CONTENT}, '{OPEN}', '{CLOSE}', '{ELLIPSIS}', ?) ELSE content END,"
    f" CASE WHEN length(content) > ? THEN {_HIGHLIGHT} END {_MATCHING}"
)
_SNIPPET = f"SELECT snippet({FTS_TABLE}, {_CONTENT}, '{OPEN}', '{CLOSE}', '{ELLIPSIS}', ?) {_MATCHING} rowid = ?"


def snippet(db, query: str, size: int, where: str, args: tuple) -> str | None:
    """The snippet, `size` tokens long, of the fragment matching `query` that `where` selects (a condition
    on the FTS table, with an ORDER BY and LIMIT if need be; its parameters `args`), as indexed
    (unspaced.shown() writes it as written); None when no fragment is selected."""
    phrases = len(_TOKEN.findall(query))  # at least as many as FTS5's: each has a word
    short = 2 * MAX_SNIPPET_MATCHES // max(phrases, 1) - 1  # a text of n words has 2n - 1 characters or more
    row = db.execute_sql(f"{_SNIPPET_OR_HIGHLIGHT} {where}", (short, short, size, short, *_MARKS, query, *args)).fetchone()
    if row is None:
        return None
    rowid, written, text, marked = row
    if written:
        return text
    marks = _free_marks(text)
    if marks != _MARKS:
        marked = db.execute_sql(f"SELECT {_HIGHLIGHT} {_MATCHING} rowid = ?", (*marks, query, rowid)).fetchone()[0]
    runs = _marked_runs(marked, *marks)
    # A run holds a match or more, each of a phrase starting at one of its words.
    if len(runs) <= MAX_SNIPPET_MATCHES and phrases * sum(len(_TOKEN.findall(run)) for _, run in runs) <= MAX_SNIPPET_MATCHES:
        return db.execute_sql(_SNIPPET, (size, query, rowid)).fetchone()[0]
    return built_snippet(text, runs, size)


def _free_marks(text: str) -> tuple[str, str]:
    if _MARKS[0] not in text and _MARKS[1] not in text:
        return _MARKS
    held = set(text)
    free = (mark for mark in map(chr, range(ord(_MARKS[1]) + 1, 0x110000)) if mark not in held)
    return next(free), next(free)


def _marked_runs(marked: str, opening: str, closing: str) -> list[tuple[int, str]]:
    """The runs highlight() marked in `marked`: (offset in the unmarked text, run)."""
    before, *pieces = marked.split(opening)
    runs, offset = [], len(before)
    for piece in pieces:
        run, _, after = piece.partition(closing)
        runs.append((offset, run))
        offset += len(run) + len(after)
    return runs


def _folded(text: str) -> str:
    """A phrase as unicode61 compares it: its words, case and diacritics folded."""
    words = " ".join(_TOKEN.findall(text)).casefold()
    return "".join(c for c in unicodedata.normalize("NFD", words) if not unicodedata.combining(c))


def built_snippet(text: str, runs: list[tuple[int, str]], size: int) -> str:
    """snippet()'s snippet of `text`, `size` tokens long, for the marked `runs` (_marked_runs)."""
    starts = [word.start() for word in _TOKEN.finditer(text)]
    firsts = [bisect_left(starts, offset) for offset, _ in runs]
    kept = [i for i, (first, (offset, run)) in enumerate(zip(firsts, runs, strict=True))
            if first < len(starts) and starts[first] < offset + len(run)]
    if len(kept) < len(runs):  # a run without a word as Python cuts them (its Unicode tables differ)
        runs, firsts = [runs[i] for i in kept], [firsts[i] for i in kept]
    lasts = _LastWords(starts, runs)
    phrase_ids: dict[str, int] = {}
    phrase_of_run = {run: phrase_ids.setdefault(_folded(run), len(phrase_ids)) for run in {run for _, run in runs}}
    phrases = [phrase_of_run[run] for _, run in runs]
    sentences = [0, *(bisect_left(starts, found.end()) for found in _SENTENCE_START.finditer(text))]
    start = _best_start(firsts, lasts, phrases, sentences, len(starts), size)
    return _rendered(text, starts, firsts, lasts, start, size)


class _LastWords:
    """The last word of each run (read for the few runs a snippet shows)."""

    def __init__(self, starts: list[int], runs: list[tuple[int, str]]):
        self.starts, self.runs = starts, runs

    def __getitem__(self, i: int) -> int:
        offset, run = self.runs[i]
        return bisect_right(self.starts, offset + len(run) - 1) - 1


def _best_start(firsts: list[int], lasts: _LastWords, phrases: list[int], sentences: list[int], words: int,
                size: int) -> int:
    """The first token of the best window as snippet() picks it, the first of equals in its order: for
    each match, the window from it (moved to centre its matches), then the one from the sentence start
    before it. A window's score is 1000 per distinct phrase and 1 per further match in it (at most
    `size` matches: runs are words apart), so each costs O(size)."""
    if not firsts:
        return 0
    ends = [bisect_left(firsts, first + size) for first in firsts]  # matches starting in each window
    at_matches = [999 * len(set(phrases[i:end])) + end - i for i, end in enumerate(ends)]
    best = max(range(len(firsts)), key=at_matches.__getitem__)
    spare = size - (lasts[ends[best] - 1] + 1 - firsts[best])
    candidates = [(at_matches[best], -2 * best, max(0, min(firsts[best] - int(spare / 2), words - size)))]  # C's /
    if words > size:
        for sentence, following in zip(sentences, [*sentences[1:], words], strict=True):
            i = bisect_right(firsts, sentence)  # the first match the sentence start is before
            if i < len(firsts) and firsts[i] < following:
                lo, hi = bisect_left(firsts, sentence), bisect_left(firsts, sentence + size)
                score = 999 * len(set(phrases[lo:hi])) + hi - lo + (120 if sentence == 0 else 100)
                candidates.append((score, -2 * i - 1, sentence))
    return max(candidates)[2]


def _word_end(text: str, start: int) -> int:
    return _TOKEN.match(text, start).end()


def _rendered(text: str, starts: list[int], firsts: list[int], lasts: _LastWords, start: int, size: int) -> str:
    """`text` from token `start` for `size` tokens, the matches starting there marked (one running past
    the end closed at it), with an ellipsis for text left out at either end, as snippet() writes it."""
    last = start + size - 1
    out, offset = [], 0
    if start > 0:
        out.append(ELLIPSIS)
        offset = starts[start]
    for i in range(bisect_left(firsts, start), bisect_right(firsts, last)):
        end = _word_end(text, starts[min(lasts[i], last)])
        out += [text[offset:starts[firsts[i]]], OPEN, text[starts[firsts[i]]:end], CLOSE]
        offset = end
    if last >= len(starts) - 1:
        out.append(text[offset:])
    else:
        out += [text[offset:_word_end(text, starts[last])], ELLIPSIS]
    return "".join(out)
