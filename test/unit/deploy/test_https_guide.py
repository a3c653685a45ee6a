"""docs/https.md's native-TLS guide ("A real certificate without Docker"), read as the steps it gives."""

from __future__ import annotations

import re
from pathlib import Path


def native_guide(repo_root: Path) -> str:
    text = (repo_root / "docs" / "https.md").read_text()
    return text.split("### A real certificate without Docker", 1)[1].split("\n---\n", 1)[0]


def test_the_user_the_hook_and_the_unit_run_as_is_created_first(repo_root):
    """certbot's deploy hook installs the files for `-o aiproxy` and the unit runs as `User=aiproxy`:
    on a server without that user the hook fails ('invalid user') and no certificate is installed."""
    guide = native_guide(repo_root)
    users = set(re.findall(r"(?:install [^\n]*-o |User=)(\w+)", guide))
    assert users == {"aiproxy"}
    created = re.search(r"useradd\b[^\n]*\baiproxy\b", guide)
    assert created and created.start() < guide.index("-o aiproxy"), "the guide never creates the aiproxy user"
