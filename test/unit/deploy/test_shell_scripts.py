"""Every deployment script: bash syntax, shellcheck, --help, strict mode."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[3] / "deployments" / "scripts").glob("*.sh"))
EXPECTED = {"setup-https.sh", "test-https.sh", "deploy-production.sh"}


def test_expected_scripts_exist():
    assert EXPECTED <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_strict_mode_and_executable(script: Path):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert re.search(r"^set -euo pipefail$", text, re.M), "scripts must run with set -euo pipefail"
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable (git update-index --chmod=+x)"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script: Path):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script: Path):
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; .ci/run installs it)")
    result = subprocess.run([shellcheck, "--external-sources", "--severity=style", str(script)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_clean_remote_part_of_deploy(tmp_path: Path):
    """deploy-production.sh sends a second script to the server inside a heredoc: lint it too."""
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; .ci/run installs it)")
    text = (SCRIPTS[0].parent / "deploy-production.sh").read_text()
    match = re.search(r"^read -r -d '' REMOTE_LIB <<'REMOTE' \|\| true\n(.*?)^REMOTE$", text, re.M | re.S)
    assert match, "REMOTE_LIB heredoc not found"
    remote = tmp_path / "remote.sh"
    remote.write_text("#!/usr/bin/env bash\n" + match.group(1))
    result = subprocess.run([shellcheck, "--severity=style", str(remote)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_exits_zero_and_shows_usage(script: Path):
    result = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_unknown_option_fails(script: Path):
    result = subprocess.run(
        ["bash", str(script), "--no-such-option"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "unknown option" in result.stderr
