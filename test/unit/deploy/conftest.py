"""Fixtures for the deployment tests (deployments/, configs/.env.example). Docker is not needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def scripts_dir() -> Path:
    return REPO / "deployments" / "scripts"


@pytest.fixture()
def project_dir(tmp_path: Path) -> Path:
    """A throwaway project directory holding only what setup-https.sh reads (configs/.env.example)."""
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / ".env.example", tmp_path / "configs" / ".env.example")
    return tmp_path


def read_env(path: Path) -> dict[str, str]:
    """Active KEY=VALUE lines of a .env file, one pair of surrounding quotes removed (dotenv rules)."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@pytest.fixture(scope="session")
def parse_env():
    return read_env
