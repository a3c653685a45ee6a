"""Words of scripts written without spaces between them, for FTS5's unicode61 tokenizer.

unicode61 cuts text only where a character is neither a letter nor a digit. Chinese, Japanese, Thai,
Lao, Khmer and Burmese put no spaces between words, and Korean attaches particles to its words:
`我们今天讨论数据库的性能问题` was one token, in which `数据库` found nothing, as `ฐานข้อมูล` found
nothing in `วันนี้เราคุยเรื่องฐานข้อมูลและประสิทธิภาพ`. So every character of these scripts is made a
token of its own, in indexed text and in queries alike, by a zero-width space (U+200B, a separator to
unicode61, invisible where text is shown) on each side of it. A run of them in a query is then an
FTS5 phrase of its characters, which matches exactly where the run occurs in the text. Text without
such characters is left as it is.

A character here is a letter with the combining marks that follow it (Unicode categories Mn and Mc:
Thai vowel signs and tone marks, Khmer and Burmese dependent signs, viramas): unicode61 would drop
marks as separators, so `กิน` (eat) would be `ก น`, found in `กัน`, and `ที่` every `ท`. So in the
indexed copy (and in queries) each such mark is written as a private-use character of plane 16
(U+100000 plus its code point), which unicode61 takes as part of the word: the token is the letter
with its marks, compared exactly, and a highlight or a snippet's end keeps them. shown() writes
them back; text that itself held those private-use characters (nothing assigns them) would show
them as marks.
"""

from __future__ import annotations

import re
import unicodedata

SEPARATOR = "\u200b"
FIRST_STAND_IN = "\U00100000"  # a mark's private-use stand-in is its code point in plane 16

# Han and hangul syllables: letters only, no combining marks.
_LETTER_RANGES = (
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xAC00, 0xD7FF),  # Hangul Syllables, Hangul Jamo Extended-B
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x323AF),  # CJK Unified Ideographs Extensions B to H, Compatibility Supplement
)
# Kana, jamo and the scripts of Southeast Asia, whose blocks hold combining marks too.
_MARKED_RANGES = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar (Burmese)
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer Symbols
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # kana repetition marks
    (0x303B, 0x303C),  # 〻 〼
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x318F),  # Bopomofo, Hangul Compatibility Jamo
    (0x31A0, 0x31FF),  # Bopomofo Extended, CJK Strokes, Katakana Phonetic Extensions
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A
    (0xA9E0, 0xA9FF),  # Myanmar Extended-B
    (0xAA60, 0xAA7F),  # Myanmar Extended-A
    (0xFF66, 0xFFDC),  # halfwidth Katakana and Hangul
    (0x1B000, 0x1B16F),  # Kana Supplement, Kana Extended-A, Small Kana Extension
)
# The scripts written without spaces between words, and Korean, whose particles attach to the word
# before them (with their marks and halfwidth forms).
RANGES = _LETTER_RANGES + _MARKED_RANGES
_CLASS = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in RANGES)
MARKS = "".join(  # the combining marks of those blocks (Mn, Mc)
    chr(c) for lo, hi in _MARKED_RANGES for c in range(lo, hi + 1) if unicodedata.category(chr(c)) in ("Mn", "Mc")
)
_SCRIPT = re.compile(f"[{_CLASS}]")
_RUN = re.compile(f"[{_CLASS}]+")
_SPLIT_MARK = re.compile(f"{SEPARATOR}[{MARKS}]")  # a mark that SEPARATOR.join() parted from its letter
_GLUED = {SEPARATOR + mark: chr(ord(FIRST_STAND_IN) | ord(mark)) for mark in MARKS}  # -> its stand-in
_AS_WRITTEN = {ord(SEPARATOR): None} | {ord(stand_in): split[1] for split, stand_in in _GLUED.items()}


def _glued(split: re.Match) -> str:
    return _GLUED[split.group()]


def _spaced(run: re.Match) -> str:
    return SEPARATOR + _SPLIT_MARK.sub(_glued, SEPARATOR.join(run.group())) + SEPARATOR


def has_unspaced(text: str) -> bool:
    """Whether `text` holds a character of a script written without spaces (or Korean)."""
    return not text.isascii() and _SCRIPT.search(text) is not None


def split_unspaced(text: str) -> str:
    """`text` with every character of those scripts (with its marks) a unicode61 token of its own,
    for the index or a query: applied once, undone by shown()."""
    return text if text.isascii() else _RUN.sub(_spaced, text)


def shown(text: str) -> str:
    """Indexed text (a snippet) or a query as it was written: without the separators split_unspaced
    inserted, with marks as marks. A zero-width space the text itself held goes too; it showed as
    nothing anyway."""
    return text if text.isascii() else text.translate(_AS_WRITTEN)
