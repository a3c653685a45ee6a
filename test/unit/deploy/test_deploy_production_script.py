"""deployments/scripts/deploy-production.sh end to end on one machine: a fake `ssh` runs the remote
commands locally (rsync goes through it too, as it would through real ssh), a fake `docker` records
the compose calls and plays the container's health, a fake `curl` answers the route check."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "deployments" / "scripts" / "deploy-production.sh"

pytestmark = pytest.mark.skipif(
    not (shutil.which("rsync") and shutil.which("tar")), reason="needs rsync and tar"
)

FAKE_SSH = r"""#!/usr/bin/env bash
# ssh [options] HOST COMMAND... -> run COMMAND here, like sshd would run it on HOST.
while (($#)); do
    case $1 in
        -p | -o | -i | -l | -F | -J) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
echo "$1" >>"$FAKE_STATE/ssh-hosts"
shift
exec bash -c "$*"
"""

FAKE_DOCKER = r"""#!/usr/bin/env bash
state=$FAKE_STATE
echo "docker $*" >>"$state/docker-calls"
case $1 in
    compose)
        shift
        while [[ $1 == -f || $1 == --env-file ]]; do shift 2; done
        case $1 in
            version) echo "Docker Compose version v2.99.0-fake" ;;
            ps) echo "cid-aiproxy" ;;
            build) [[ ! -e $state/fail-build ]] || exit 1; cat VERSION >"$state/built" ;;
            up)
                if [[ " $* " == *" --no-build "* ]]; then
                    echo healthy >"$state/health"
                else
                    cat "$state/next-health" >"$state/health" 2>/dev/null || echo healthy >"$state/health"
                    cat VERSION >"$state/running"
                fi
                ;;
            pull | logs) ;;
        esac
        ;;
    inspect)
        if [[ $3 == *Health* ]]; then cat "$state/health"; else echo "sha256:$(cat "$state/running")"; fi
        ;;
    tag) echo "$3" >>"$state/tags" ;;
    image)
        case $2 in
            inspect) grep -qxF "$3" "$state/tags" 2>/dev/null ;;
            rm) grep -vxF "$3" "$state/tags" >"$state/tags.new" || true; mv "$state/tags.new" "$state/tags" ;;
        esac
        ;;
esac
"""

FAKE_CURL = r"""#!/usr/bin/env bash
echo "curl $*" >>"$FAKE_STATE/curl-calls"
echo '{"status":"ok","version":"fake"}'
"""


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir, state, source, server = (tmp_path / n for n in ("bin", "state", "source", "server"))
    for d in (bin_dir, state, source, server):
        d.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("docker", FAKE_DOCKER), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    # A small tree shaped like the repository.
    (source / "deployments" / "scripts").mkdir(parents=True)
    (source / "deployments" / "docker-compose.yml").write_text("services: {}\n")
    (source / "internal").mkdir()
    (source / "internal" / "app.py").write_text("print('v1')\n")
    (source / "VERSION").write_text("v1\n")
    for junk in (".venv/bin/python", ".git/HEAD", "logs/app.log", "internal/__pycache__/app.pyc"):
        (source / junk).parent.mkdir(parents=True, exist_ok=True)
        (source / junk).write_text("local only\n")
    (source / ".env").write_text("API_KEYS=sk-local-dev-key\n")
    server_env = tmp_path / "server.env"
    server_env.write_text("DOMAIN=ai.test\nAPI_KEYS=sk-server-key\n")
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "DEPLOY_HOST": "deploy@server.test",
        "DEPLOY_PATH": str(server),
        "DEPLOY_SOURCE": str(source),
        "DEPLOY_ENV_FILE": str(server_env),
        "DEPLOY_HEALTH_TIMEOUT": "20",
        "DEPLOY_KEEP_BACKUPS": "2",
    }


def deploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def new_version(env: dict[str, str], version: str) -> None:
    source = Path(env["DEPLOY_SOURCE"])
    (source / "VERSION").write_text(f"{version}\n")
    (source / "internal" / "app.py").write_text(f"print({version!r})\n")
    time.sleep(1.1)  # backups are named by the second


def backups(env: dict[str, str]) -> list[str]:
    return sorted(p.name for p in (Path(env["DEPLOY_PATH"]) / "backups").glob("aiproxy-*.tar.gz"))


def state(env: dict[str, str], name: str) -> str:
    path = Path(env["FAKE_STATE"]) / name
    return path.read_text() if path.exists() else ""


def test_requires_deploy_host(env):
    env = {k: v for k, v in env.items() if k != "DEPLOY_HOST"}
    result = deploy(env)
    assert result.returncode != 0
    assert "DEPLOY_HOST is required" in result.stderr


def test_first_deploy_then_update_with_backup(env):
    server = Path(env["DEPLOY_PATH"])
    first = deploy(env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "first deploy: nothing to back up" in first.stdout
    assert (server / "internal" / "app.py").read_text() == "print('v1')\n"
    # Local-only files never travel; the server's .env comes from DEPLOY_ENV_FILE, mode 600.
    for junk in (".venv", ".git", "logs/app.log", "internal/__pycache__"):
        assert not (server / junk).exists(), junk
    assert (server / ".env").read_text().startswith("DOMAIN=ai.test")
    assert (server / ".env").stat().st_mode & 0o077 == 0
    assert state(env, "running") == "v1\n"
    calls = state(env, "docker-calls")
    assert calls.index("compose") < calls.index(" build aiproxy") < calls.index(" up -d")
    assert "--resolve ai.test:443:127.0.0.1 https://ai.test:443/health" in state(env, "curl-calls")

    # The operator changes the server's .env and logs; a deploy must keep both.
    (server / ".env").write_text("DOMAIN=ai.test\nAPI_KEYS=sk-rotated\n")
    (server / "logs").mkdir(exist_ok=True)
    (server / "logs" / "requests.jsonl").write_text("{}\n")
    new_version(env, "v2")
    second = deploy(env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (server / "internal" / "app.py").read_text() == "print('v2')\n"
    assert (server / ".env").read_text().endswith("sk-rotated\n")
    assert (server / "logs" / "requests.jsonl").exists()
    [backup] = backups(env)
    with tarfile.open(server / "backups" / backup) as tar:
        names = tar.getnames()
        assert tar.extractfile("./internal/app.py").read() == b"print('v1')\n"
    assert not any(n.startswith("./logs") or n.startswith("./backups") for n in names)
    assert (server / "backups" / backup).stat().st_mode & 0o077 == 0
    # The image that was running is kept for an offline rollback.
    assert f"aiproxy:backup-{backup[len('aiproxy-') : -len('.tar.gz')]}" in state(env, "tags")

    listing = deploy(env, "--list-backups")
    assert listing.returncode == 0
    assert backup in listing.stdout and "image aiproxy:backup-" in listing.stdout


def test_unhealthy_switch_rolls_back_automatically(env):
    server = Path(env["DEPLOY_PATH"])
    assert deploy(env).returncode == 0
    new_version(env, "v2")
    (Path(env["FAKE_STATE"]) / "next-health").write_text("unhealthy\n")
    result = deploy(env)
    assert result.returncode != 0
    assert "rolling back" in result.stdout
    assert "rolled back" in result.stderr
    assert (server / "internal" / "app.py").read_text() == "print('v1')\n"
    ups = [line for line in state(env, "docker-calls").splitlines() if " up " in line]
    assert "--no-build" in ups[-1], "the rollback restarts the backed-up image without rebuilding"


def test_failed_build_leaves_the_running_version_and_restores_files(env):
    server = Path(env["DEPLOY_PATH"])
    assert deploy(env).returncode == 0
    new_version(env, "v2")
    (Path(env["FAKE_STATE"]) / "fail-build").write_text("")
    ups_before = state(env, "docker-calls").count(" up ")
    result = deploy(env)
    assert result.returncode != 0
    assert "build failed" in result.stderr
    assert state(env, "docker-calls").count(" up ") == ups_before  # nothing was switched
    assert (server / "internal" / "app.py").read_text() == "print('v1')\n"


def test_after_an_undone_deploy_rollback_goes_one_version_back(env):
    """The backup an undone deploy took is the version running again: kept, it made the next
    --rollback restore the running version and pushed an older backup out of the kept N."""
    server = Path(env["DEPLOY_PATH"])
    assert deploy(env).returncode == 0
    new_version(env, "v2")
    assert deploy(env).returncode == 0
    [of_v1] = backups(env)
    new_version(env, "v3")
    (Path(env["FAKE_STATE"]) / "next-health").write_text("unhealthy\n")
    assert deploy(env).returncode != 0
    new_version(env, "v4")
    (Path(env["FAKE_STATE"]) / "fail-build").write_text("")
    assert deploy(env).returncode != 0
    assert (server / "internal" / "app.py").read_text() == "print('v2')\n"
    assert backups(env) == [of_v1]
    stamp = of_v1[len("aiproxy-") : -len(".tar.gz")]
    assert [t for t in state(env, "tags").split() if t.startswith("aiproxy:backup-")] == [f"aiproxy:backup-{stamp}"]
    result = deploy(env, "--rollback")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (server / "internal" / "app.py").read_text() == "print('v1')\n"


def test_manual_rollback_and_pruning(env):
    server = Path(env["DEPLOY_PATH"])
    assert deploy(env).returncode == 0
    for version in ("v2", "v3", "v4"):
        new_version(env, version)
        assert deploy(env).returncode == 0
    # Three backups were made (of v1, v2, v3); DEPLOY_KEEP_BACKUPS=2 keeps the newest two.
    kept = backups(env)
    assert len(kept) == 2
    assert len(state(env, "tags").split()) == 2
    result = deploy(env, "--rollback")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (server / "internal" / "app.py").read_text() == "print('v3')\n"
    result = deploy(env, "--rollback", kept[0])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (server / "internal" / "app.py").read_text() == "print('v2')\n"
    assert deploy(env, "--rollback", "aiproxy-19990101-000000.tar.gz").returncode != 0
    assert deploy(env, "--rollback", "../../etc/passwd").returncode != 0


def test_env_files_in_the_tree_are_not_copied(env):
    """docs/https.md suggests DEPLOY_ENV_FILE=prod.env next to the tree: its secrets must reach the server
    only as its .env (mode 600), never as a copy in the deployed tree and its backups."""
    source, server = Path(env["DEPLOY_SOURCE"]), Path(env["DEPLOY_PATH"])
    for name in ("prod.env", ".env.production", "configs/.env.example"):
        (source / name).parent.mkdir(exist_ok=True)
        (source / name).write_text("API_KEYS=sk-server-key\n")
    result = deploy(env | {"DEPLOY_ENV_FILE": str(source / "prod.env")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (server / "prod.env").exists() and not (server / ".env.production").exists()
    assert (server / "configs" / ".env.example").exists()  # the template is not a secret
    assert (server / ".env").read_text() == "API_KEYS=sk-server-key\n"
