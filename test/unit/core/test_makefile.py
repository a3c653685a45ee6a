"""The Makefile's developer targets do what the README's Development table says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _commands(target: str) -> list[list[str]]:
    dry_run = subprocess.run(["make", "-s", "-n", target], cwd=REPO, capture_output=True, text=True, check=True)
    return [line.split() for line in dry_run.stdout.splitlines() if "ruff" in line]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_fmt_leaves_the_committed_tree_unchanged():
    """`make fmt` ran `ruff format`, whose layout the code does not use: on a clean checkout it
    rewrote 162 files (6,600 lines) that `make lint` passes. Each of its commands, run in check
    mode, must find nothing to change."""
    commands = _commands("fmt")
    assert commands, "make fmt runs no ruff command"
    for command in commands:
        checking = [arg for arg in command if arg != "--fix"]
        checking.insert(checking.index("format") + 1 if "format" in checking else checking.index("check") + 1,
                        "--check" if "format" in checking else "--diff")
        result = subprocess.run(checking, cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)} would change the tree:\n{result.stdout[-2000:]}"


# What .gitignore lists that is the user's, not generated: `make clean` must keep it.
USER_DATA = {"/logs/", "/.env", "/bundles/"}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_clean_removes_everything_generated_that_gitignore_hides(tmp_path):
    """Was: `make clean` left `.hypothesis/` (the property tests' database), `.bench/` (the benchmarks'
    peer venvs) and `*.egg-info/` behind, though .gitignore lists them as generated."""
    shutil.copy(REPO / "Makefile", tmp_path)
    generated = [line.strip() for line in (REPO / ".gitignore").read_text().splitlines()
                 if line.strip() and not line.startswith("#") and line.strip() not in USER_DATA]
    made = []
    for pattern in generated:
        name = pattern.strip("/").replace("*", "aiproxy")
        path = tmp_path / ("internal/" if pattern.startswith("*") and pattern.endswith("/") else "") / name
        if pattern.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
        made.append(path)
    for name in USER_DATA:
        (tmp_path / name.strip("/")).mkdir()
    subprocess.run(["make", "-s", "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert [str(path.relative_to(tmp_path)) for path in made if path.exists()] == []
    assert all((tmp_path / name.strip("/")).exists() for name in USER_DATA)
