"""Random search queries for fuzz tests of the log store's full-text search (stdlib `random`, seeded):
FTS5 syntax in random combinations and nestings, balanced or not, operators in any case, column
filters on known and unknown columns, unicode of every kind the tokenizers treat apart, control
characters, very long queries, and the documented syntax used correctly."""

from __future__ import annotations

import random

# Words the fuzz stores hold (and some they do not), in the scripts unspaced.py splits and those it does not.
WORDS = ("alpha", "beta", "timeout", "retry", "gpt-4", "what's", "file.py", "C++", "café", "naive", "Paris", "france",
         "数据库", "データ", "데이터베이스", "ฐานข้อมูล", "ป่า", "ຂໍ້ມູນ", "ទិន្នន័យ", "ဒေတာ", "שלום", "مرحبا", "ΑΛΦΑ",
         "x", "a1", "_", "near", "not", "and", "or", "zz-missing")
OPERATORS = ("AND", "OR", "NOT", "NEAR", "and", "or", "not", "Near", "NEAR/3", "NEAR/0", "NEAR/x", "near/2", "NEAR/")
COLUMNS = ("role", "content", "endpoint", "model_original", "model_mapped", "request_id", "Content", "ROLE",
           "nosuch", "note", "https")
PUNCTUATION = tuple('"()*^-+:{},\'./\\;[]!?#@$%&=~`|<>')
# Combining marks, bidi controls, zero-width characters, emoji sequences, private use (plane 16: the
# stand-ins unspaced.py writes for marks), U+FFFD, BOM, odd spaces and letters, controls.
ODD = ("\u0301", "e\u0301", "\u202e", "\u200f", "\u200b", "\u200d", "\u2060", "👩\u200d💻", "🚀", "🇫🇷", "\ue000",
       "\U000f0000", "\U00100e34", "\U00100e48", "\U0010ffff", "\ufffd", "\ufeff", "\u3000", "\u00a0", "\x01",
       "\x1a", "\x1b[31m", "\x7f", "\x85", "\t", "\n", "\r", "\u2028", "\u0e31", "\u0e48", "ǅ", "ß", "İ", "ﬁ",
       "\uff21", "١٢٣", "\U0001d400", "\U00020000")
NUL = "\x00"
# Bytes that are not UTF-8 on a command line (a Latin-1 é, 0xFF), as Python reads them: only argv carries them.
SURROGATES = ("\udce9", "\udcff", "\udc80")


class QueryGenerator:
    """queries(n) -> n random query strings; `surrogates` adds lone surrogates to the mix."""

    def __init__(self, seed: int, *, surrogates: bool = False) -> None:
        self.rng = random.Random(seed)
        self.odd = ODD + (NUL,) + (SURROGATES if surrogates else ())

    def queries(self, n: int) -> list[str]:
        return [self.query() for _ in range(n)]

    def query(self) -> str:
        rng, roll = self.rng, self.rng.random()
        if roll < 0.15:
            return self.documented()
        if roll < 0.18:
            return "".join(rng.choice((*PUNCTUATION, " ", ",")) for _ in range(rng.randint(1, 12)))
        if roll < 0.20:
            return rng.choice((" OR ", " ", " AND ", ", ")).join(rng.choice(WORDS) for _ in range(rng.randint(60, 400)))
        if roll < 0.21:
            depth = rng.randint(1, 300)
            return "(" * depth + "alpha" + ")" * rng.choice((depth, depth - 1, 0))
        if roll < 0.22:
            return rng.choice(WORDS) * rng.randint(200, 3000)
        return self._expression(0)

    def documented(self) -> str:
        """The syntax docs/logstore.md documents, written correctly."""
        rng = self.rng
        a, b = rng.choice(WORDS[:12]), rng.choice(WORDS[:20])
        return rng.choice((
            f"{a} AND {b}", f"{a} OR {b}", f"{a} NOT {b}", f"NEAR({a} {b}, {rng.randint(0, 9)})",
            f"{a} NEAR/{rng.randint(0, 9)} {b}", f'"{a} {b}"', f"{a[:3]}*", f"^{a}", f"content:{a}", f"role:{b}",
            f"model_original:{a}", f"{{role content}}: {a}", f"{a} -{b}", f'{a} -"{b}"', f"{a} -({b} OR x)",
            f"{a}, {b}", f"-content:{a}", f"({a} OR {b}) AND x", a, b,
        ))

    def _expression(self, depth: int) -> str:
        rng = self.rng
        parts = [self._atom(depth) for _ in range(rng.randint(1, 6))]
        return "".join(part + rng.choice((" ", " ", " ", "", "  ", "\t")) for part in parts).strip(" ")

    def _atom(self, depth: int) -> str:
        rng, roll, deeper = self.rng, self.rng.random(), depth < 4
        if roll < 0.35:
            return rng.choice(WORDS)
        if roll < 0.45:
            return rng.choice(OPERATORS)
        if roll < 0.55:
            return rng.choice(PUNCTUATION)
        if roll < 0.63:
            return rng.choice(self.odd)
        if roll < 0.70:
            return rng.choice(COLUMNS) + ":" + (self._atom(depth + 1) if deeper else "x")
        if roll < 0.74:
            columns = " ".join(rng.sample(COLUMNS, rng.randint(0, 3)))
            return rng.choice(("", "-")) + "{" + columns + "}:" + (self._atom(depth + 1) if deeper else "x")
        if roll < 0.80 and deeper:
            return "(" + self._expression(depth + 1) + (")" if rng.random() < 0.8 else "")
        if roll < 0.85 and deeper:
            return '"' + self._expression(depth + 1) + ('"' if rng.random() < 0.8 else "")
        if roll < 0.89 and deeper:
            distance = rng.choice(("", ", 0", ", 3", ", -1", ", x", ",", ", 99999999999999999999"))
            return f"NEAR({self._expression(depth + 1)}{distance})"
        if roll < 0.94:
            return rng.choice(("-", "^", "+", "*", "", "--", "-^")) + rng.choice(WORDS) + rng.choice(("*", "", "**", "*x", "^"))
        return "".join(self._character() for _ in range(rng.randint(1, 6)))

    def _character(self) -> str:
        """Any character of planes 0 to 2 (those most scripts are in) but a surrogate."""
        while True:
            ch = chr(self.rng.randint(0x20, 0x2FFFF))
            if not "\ud800" <= ch <= "\udfff":
                return ch
