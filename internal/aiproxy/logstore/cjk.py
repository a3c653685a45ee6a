"""Chinese, Japanese and Korean words for FTS5's unicode61 tokenizer.

unicode61 cuts text only where a character is neither a letter nor a digit, and these scripts
put no spaces between words: `我们今天讨论数据库的性能问题` was one token, in which `数据库`
found nothing (and `데이터베이스의`, a Korean word with its particle, hid `데이터베이스`). So every
CJK character is made a token of its own, in indexed text and in queries alike, by a zero-width
space (U+200B, a separator to unicode61, invisible where text is shown) on each side of it. A CJK run in a query is then an FTS5 phrase of its characters, which matches
exactly where the run occurs in the text. Text without CJK characters is left as it is.
"""

from __future__ import annotations

import re

SEPARATOR = "\u200b"

# Han, kana and hangul (with their marks and halfwidth forms): the scripts written without spaces
# between words, and Korean, whose particles attach to the word before them.
RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # kana repetition marks
    (0x303B, 0x303C),  # 〻 〼
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x318F),  # Bopomofo, Hangul Compatibility Jamo
    (0x31A0, 0x31FF),  # Bopomofo Extended, CJK Strokes, Katakana Phonetic Extensions
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A
    (0xAC00, 0xD7FF),  # Hangul Syllables, Hangul Jamo Extended-B
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0xFF66, 0xFFDC),  # halfwidth Katakana and Hangul
    (0x1B000, 0x1B16F),  # Kana Supplement, Kana Extended-A, Small Kana Extension
    (0x20000, 0x323AF),  # CJK Unified Ideographs Extensions B to H, Compatibility Supplement
)
_CLASS = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in RANGES)
_CJK = re.compile(f"[{_CLASS}]")
_RUN = re.compile(f"[{_CLASS}]+")


def _spaced(run: re.Match) -> str:
    return SEPARATOR + SEPARATOR.join(run.group()) + SEPARATOR


def has_cjk(text: str) -> bool:
    return not text.isascii() and _CJK.search(text) is not None


def split_cjk(text: str) -> str:
    """`text` as written with every CJK character a unicode61 token of its own (on text that already
    has them, it adds separators that change no token)."""
    return text if text.isascii() else _RUN.sub(_spaced, text)


def shown(text: str) -> str:
    """Indexed text (a snippet) or a query as it was written: without the separators split_cjk
    inserted. A zero-width space the text itself held goes too; it showed as nothing anyway."""
    return text.replace(SEPARATOR, "")

