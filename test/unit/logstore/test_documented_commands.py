"""Every `logdb` command in the README's and docs' shell examples is one the CLI accepts as written:
the commands, subcommands and flags a user copies from them must exist (seed §11 Documentation drift:
its `bundle transfer host:path` example never worked)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from aiproxy.entrypoints.logdb import build_parser

REPO = Path(__file__).resolve().parents[3]
DOCS = ("README.md", "docs/logstore.md", "docs/bundles.md", "docs/https.md")
LOGDB = re.compile(r"(?:^|[\s;&|])(?:\.venv/bin/)?logdb\s+(.*)$")


def _examples() -> list[tuple[str, str]]:
    """(document, the arguments after `logdb`) for each logdb line of its ```bash/```sh blocks."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", (REPO / doc).read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                match = LOGDB.search(line.split(" #")[0].strip())
                if match:
                    found.append((doc, match.group(1)))
    return found


EXAMPLES = _examples()


def test_the_examples_were_found():
    commands = {args.split()[0] for _, args in EXAMPLES}
    assert {"ingest", "search", "dialogs", "show", "stats", "bundle"} <= commands, commands


@pytest.mark.parametrize(("doc", "args"), EXAMPLES, ids=[f"{d}: {a}" for d, a in EXAMPLES])
def test_every_documented_logdb_command_parses(doc, args):
    argv = shlex.split(args.replace("…", "x").replace("<file>", "file"))
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{doc}: `logdb {args}` is refused by the CLI (exit {exc.code})")
