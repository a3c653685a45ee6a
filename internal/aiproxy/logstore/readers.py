"""Incremental readers for the two log formats. Each yields `Item`s from a byte offset and
stops before anything incomplete, so the next run resumes exactly there. `idle_size` is the
file's size when it had not changed for a while: an incomplete tail ending there was left by a
writer that died mid-record, so it is read as it stands (a record cut just before its newline
is whole) or reported as corrupt instead of being waited for forever. A tail that grew since
is left for the next run as usual.

* JSON lines (the gateway): one record per `\\n`-terminated line; an unterminated last line is
  still being written and is left alone. An idle one is read without counting its line: a
  restarted gateway ends it with the `\\n` that counts it, so later line numbers stay right.
* The seed's endpoint logs: `YYYY-MM-DD HH:MM:SS - LEVEL - ` then pretty-printed JSON over
  many lines. A block runs from a prefixed line to the next prefixed line; it is decoded with
  a real JSON decoder (`json.JSONDecoder.raw_decode`), so braces and quotes inside strings
  are just text. A block at EOF that does not decode yet is left for the next run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

_SEED_PREFIX = re.compile(rb"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:,\d+)? - [A-Z]+ - ")
_decoder = json.JSONDecoder()


@dataclass(slots=True)
class Item:
    line: int  # 1-based line number where the record starts
    end: int  # byte offset just after the record
    lines: int  # lines consumed up to `end`
    record: Any = None  # the decoded JSON value; None for a corrupt or ignorable block
    error: str | None = None  # why the block is corrupt


def read_jsonl(stream: BinaryIO, offset: int, line_no: int, idle_size: int | None = None) -> Iterator[Item]:
    stream.seek(offset)
    while True:
        raw = stream.readline()
        complete = raw.endswith(b"\n")
        if not complete and not (raw and offset + len(raw) == idle_size):
            return
        offset += len(raw)
        line, lines = line_no + 1, line_no + complete
        line_no = lines
        if not raw.strip():
            yield Item(line, offset, lines)
            continue
        try:
            yield Item(line, offset, lines, orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            cut = "" if complete else "unterminated last line (its writer stopped mid-record): "
            yield Item(line, offset, lines, error=f"{cut}invalid JSON: {exc}")


def _decode_block(lines: list[bytes]) -> tuple[Any, str | None]:
    text = b"".join(lines).decode("utf-8", errors="replace")
    start = text.find("{")
    try:
        value, end = _decoder.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at block line {exc.lineno}"
    if text[end:].strip():
        return None, "unexpected text after the JSON object"
    return value, None


def read_seed_log(stream: BinaryIO, offset: int, line_no: int, idle_size: int | None = None) -> Iterator[Item]:
    stream.seek(offset)
    block: list[bytes] = []  # lines of the current JSON block ([] when none is open)
    block_line = line_no
    while True:
        raw = stream.readline()
        complete = raw.endswith(b"\n") or (bool(raw) and offset + len(raw) == idle_size)
        prefixed = complete and _SEED_PREFIX.match(raw)
        if block and (prefixed or not raw):
            if not raw:  # EOF: unless the file is idle, the writer may not have finished this block yet
                value, error = _decode_block(block)
                if error is None or offset == idle_size:
                    yield Item(block_line, offset, line_no, value, error)
                return
            value, error = _decode_block(block)
            yield Item(block_line, offset, line_no, value, error)
            block = []
        if not complete:
            return
        line_no += 1
        if prefixed:
            body = raw[prefixed.end():]
            if body.lstrip().startswith(b"{"):
                block, block_line = [body], line_no
            else:
                yield Item(line_no, offset + len(raw), line_no)
        elif block:
            block.append(raw)
        else:
            yield Item(line_no, offset + len(raw), line_no)  # stray text outside any record
        offset += len(raw)
